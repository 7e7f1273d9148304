"""Training core: state, step, loop, sharding, checkpointing, evaluation, metrics."""
