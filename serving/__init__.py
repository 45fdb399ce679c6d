"""Serving: the gRPC gateway over an exported model repository (never imports torch)."""
