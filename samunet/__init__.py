"""samunet: self-configuring Segment Anything fine-tuning for 3D medical images."""

__version__ = "0.1.0"
