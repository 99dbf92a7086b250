"""Wire dialects: each turns one platform's MQTT topics and payloads into the neutral model."""
