"""Exact compute rewrites shared by training, evaluation and inference (same values, less work)."""
