"""Fixtures that build small sample folders for the ML core."""
