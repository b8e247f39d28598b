"""Kafka adapters: thin layers that move records between topics and the framework-free core."""
