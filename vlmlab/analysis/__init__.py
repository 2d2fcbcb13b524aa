"""Analyses behind the notebooks (layer L3): one module per result."""
