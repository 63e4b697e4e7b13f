"""Enfugue's JSON API (0.2.x) on top of the serve-app queue."""
