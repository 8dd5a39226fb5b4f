"""A Slurm cluster over SSH, no Dagster: settings and errors, the SSH session, verified
transfers (which use the session, never the reverse), and Slurm jobs."""
