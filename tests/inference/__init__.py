"""Tests of serve_app.inference on tiny random-weight models."""
