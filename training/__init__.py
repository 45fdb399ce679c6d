"""Training: data preparation now; model training and evaluation to come."""
