"""Adapters for durable state: Postgres, object storage and the model folder."""
