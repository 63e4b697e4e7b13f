"""Pure domain: jobs, generation requests, images, errors and ports. Imports nothing else from serve_app."""
