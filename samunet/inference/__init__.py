"""Prediction: slice-wise inference and exact 3D reassembly into the original geometry."""
