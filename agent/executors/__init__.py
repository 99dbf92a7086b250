"""Executors carry out subtasks on the device and say how each ended."""
