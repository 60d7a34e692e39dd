"""What runs: the model-author API and one module per model.

A model author only ever touches this package: subclass `ModelInterface` (also reachable as
`model_utils.ModelInterface`), name the environment, and read weights through `model_utils`.
"""

from models.model_interface import ModelInterface

__all__ = ["ModelInterface"]
