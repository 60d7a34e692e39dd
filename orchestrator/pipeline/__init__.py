"""The pipeline: config, stages, scheduling, execution and outputs."""
