"""Self-supervised continued pretraining of SAM image encoders on the user's unlabelled images."""
