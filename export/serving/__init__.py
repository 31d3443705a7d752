"""Serving a bundle: the runtime every server uses, the reference HTTP server, Triton models."""
