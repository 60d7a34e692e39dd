"""The clip table, dedup and shards: an output folder as a curated dataset."""
