"""Python client for the LogitRec gateway (the SDK itself arrives with the client issue)."""
