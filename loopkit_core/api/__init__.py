"""HTTP API routes, one module per noun."""
