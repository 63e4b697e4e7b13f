"""HTTP transport: the FastAPI app, error mapping per dialect, and the InvokeAI and Enfugue routers."""
