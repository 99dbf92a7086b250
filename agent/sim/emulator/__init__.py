"""A local stand-in for the clouds' batch-task services (the seeds' APIs), driving MQTT devices."""
