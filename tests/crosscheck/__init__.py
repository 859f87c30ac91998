"""Comparisons against PyTorch (marker ``crosscheck``; skipped when torch is absent)."""
