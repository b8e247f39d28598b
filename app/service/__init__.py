"""The streaming service: the Kafka ingest stage, the Faust sequence stage, topics, metrics and health."""
