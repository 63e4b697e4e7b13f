"""Helpers shared by test packages (graph builders, request bodies)."""
