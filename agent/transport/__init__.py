"""MQTT connections: the only layer that touches sockets and the MQTT client library."""
