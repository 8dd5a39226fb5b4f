"""Shared pytest fixtures; service and ML fixtures live in their own plugin modules."""

pytest_plugins = [
    "oct_assets_tests.fixtures_cluster",
    "oct_assets_tests.fixtures_ml",
]
