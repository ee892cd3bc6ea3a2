"""Shared building blocks for method packages (not registered as methods)."""
