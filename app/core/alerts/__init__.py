"""Kibana alert documents for completed sequences: building blocks, shells, deterministic ids."""
