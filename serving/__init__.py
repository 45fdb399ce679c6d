"""Serving: the gRPC gateway (not implemented yet)."""
