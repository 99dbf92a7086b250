"""The pipeline from broker to executors and back: dispatcher, executor contract, outbox, uplink."""
