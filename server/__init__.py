"""Flower ServerApp: strategy, central validation, checkpoints and run history."""
