"""A Slurm cluster over SSH, no Dagster: settings and errors, the SSH session, verified
transfers (which use the session, never the reverse), Slurm jobs, the cluster folder's layout,
and a model trained or fetched for a salt (`training.train_for_salt`, `models`)."""
