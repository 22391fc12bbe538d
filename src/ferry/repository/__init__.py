"""The model repository: what models and versions exist, and which should be live."""
