"""Data loading, one module per kind of data."""
