"""Prediction: slice-wise inference and exact 3D reassembly into the original geometry; prompted prediction,
and `Segmenter` for interactive use from Python."""
from samunet.inference.segmenter import Segmenter

__all__ = ["Segmenter"]
