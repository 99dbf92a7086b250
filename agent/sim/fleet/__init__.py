"""The fleet runner: many real agents in one process against one broker, and scenario runs."""
