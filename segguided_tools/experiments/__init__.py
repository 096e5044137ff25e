"""Federated experiment grids: declared in TOML, run as real simulations, summarised in a report."""
