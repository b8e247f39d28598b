"""eqlstream: Elastic Security EQL sequence rules evaluated on a Kafka stream."""

__version__ = "0.2.0"
