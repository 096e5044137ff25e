"""What both Flower apps share: run config, site data, local training, the secure-aggregation wire format, DP clipping, metric keys.

Imports ``segguided_model`` and Flower, never ``server``, ``client`` or ``segguided_tools``
(an import-linter contract in ``pyproject.toml`` keeps it so).
"""
