"""What runs: the model-author API and one module per model.

A model author only ever touches this package: subclass `ModelInterface`, guard the
env-only imports with `conda_utils.is_running_in_env(...)`, and name the environment.
"""

from models.model_interface import ModelInterface

__all__ = ["ModelInterface"]
