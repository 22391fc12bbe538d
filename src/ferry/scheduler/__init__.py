"""Per-version scheduling: a dynamic batcher in front of a pool of runtime instances."""
