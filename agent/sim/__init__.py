"""The simulator side: brokers and platform stand-ins for rehearsing tasks locally."""
