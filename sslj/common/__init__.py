"""Shared helpers, the bottom layer: config checking (`checks`) and the device mesh
(`sharding`). Imports nothing from the rest of sslj, so every layer may import it."""
