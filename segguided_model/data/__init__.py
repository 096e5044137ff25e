"""Data: case discovery, quality gate, MONAI pipeline, synthetic hospitals and partitions."""
