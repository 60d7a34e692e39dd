"""Who decides: environments, workers, scheduling and the pipeline."""
