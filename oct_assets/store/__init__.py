"""The salted store, no Dagster: salts, salted folders published atomically, the Artifact value."""
