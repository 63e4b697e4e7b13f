"""Use cases on top of the domain ports: submitting jobs, dispatching them, reading results."""
