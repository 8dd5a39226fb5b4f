"""`python -m oct_assets`: `run.py` materialises the local graph (Dagster, with `run_log.py`'s
quiet terminal log); `desk.py` holds the desk commands, which load no Dagster."""
