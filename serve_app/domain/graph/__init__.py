"""InvokeAI-style node graphs: field handles, invocation schemas, validation, batches, execution state.

Pure pydantic: the Ingress validates graphs with it (422 before anything is stored), the Diffusion
replicas execute them with the implementations in `serve_app.inference.invocations`.
"""
