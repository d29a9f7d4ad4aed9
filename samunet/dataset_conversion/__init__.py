"""Conversion of other dataset layouts (MSD, folders of 2D images, synthetic phantoms) to nnU-Net v2 layout."""
