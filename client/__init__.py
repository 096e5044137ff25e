"""Flower ClientApp: one hospital site training SegGuidedNet on its own data."""
