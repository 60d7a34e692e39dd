"""Scaling a run: how many replicas each stage runs, and which GPUs they get."""
