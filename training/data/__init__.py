"""Data preparation: raw interaction logs -> a dataset directory of sequences and splits."""
