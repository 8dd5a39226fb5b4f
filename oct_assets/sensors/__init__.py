"""Dagster sensors, one module per sensor: what refreshes by itself, and when."""
