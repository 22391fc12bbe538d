"""Making the aspired versions live: load, serve, unload (TF Serving's manager idea)."""
