"""InvokeAI web-UI graphs run end to end through the InProcessExecutor's GraphRunner on the demo models."""
