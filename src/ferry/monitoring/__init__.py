"""Metrics now; reference profiles, drift and data quality as they land."""
