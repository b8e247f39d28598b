"""The sequence engine: per-key state, Elasticsearch's sequence semantics on a stream, expiry, the alert cap."""
