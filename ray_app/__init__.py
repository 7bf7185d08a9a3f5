"""ray_app: train, tune and serve a PyTorch model for the UCI Adult income task on Ray."""

__version__ = "0.1.0"
