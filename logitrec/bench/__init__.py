"""`logitrec bench`: load the gateway (or an echo server with its proto) and report what it did.

Client-side and serving-side code only: nothing here imports torch, training or export, so the
load generator runs on any machine that can reach a gateway.
"""
