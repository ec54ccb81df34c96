"""SpatialBoost: inject 3D spatial knowledge into pre-trained vision encoders through language."""

__version__ = "0.1.0"
