"""The application: the composition root, the agent, the daemon and its checks."""
