"""Evaluation: Dice, IoU, HD95 and normalised surface Dice in millimetres."""
