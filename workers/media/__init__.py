"""Media work inside a media worker: decoding for the split, cutting clips, sampling their frames, encoding."""
