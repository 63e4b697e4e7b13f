"""InvokeAI's API (v6.8) on top of the serve-app queue."""
