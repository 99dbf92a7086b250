"""Gateway mode: the registry of child devices, their adapters, and per-child routing."""
