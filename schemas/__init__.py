"""The nouns every other package speaks: records, their Arrow schemas, shards, settings."""
