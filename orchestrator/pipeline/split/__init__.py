"""Splitting a video into clips: decoding its frames and finding its scene cuts."""
