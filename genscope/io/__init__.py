"""Inputs: checkpoints (safe loading), datasets and the model zoo."""
