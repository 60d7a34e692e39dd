"""The static HTML report of an output folder: clips, filters, duplicates, stage plots, failures, provenance."""
