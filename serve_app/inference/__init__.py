"""Inference: torch and diffusers only. Model building, loading, schedulers and the generation runner."""
