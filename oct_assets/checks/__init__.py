"""Dagster asset checks, one module per asset family: the data each asset holds is fit to build
on, and the UI says why not."""
