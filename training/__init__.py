"""Training: data preparation (`training.data`), the logit language model, its training loop,
full-ranking evaluation, and the checkpoint directory that export reads."""
