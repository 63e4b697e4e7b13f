"""serve-app: self-hosted image generation speaking the InvokeAI and Enfugue APIs."""

__version__ = "0.1.0"
