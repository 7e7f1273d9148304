"""Data: sources, class-mismatch splits, host pipeline, on-device augmentation."""
