"""Postprocessing: keep the largest connected component of a class where cross-validation says it helps."""
