"""device-agent: executes IoT platforms' batch tasks on the device and reports every result."""

__version__ = "0.1.0"
