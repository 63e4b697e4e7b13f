"""Ray Serve composition root: deployments, the application builder, the local launcher. The only Ray code."""
