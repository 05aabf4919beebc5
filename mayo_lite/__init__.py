"""mayo-lite: static kernel pruning and Feature Boosting and Suppression for Keras 3 convolutional networks."""

__version__ = "0.1.0"
