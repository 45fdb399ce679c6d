"""LogitRec: logit language models as recommenders (CLI and shared plumbing)."""

__version__ = "0.1.0"
