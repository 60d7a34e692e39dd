"""The output folder: writing results, its parts, its lock, and redoing one stage over it."""
