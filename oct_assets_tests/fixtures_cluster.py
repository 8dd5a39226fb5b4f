"""Fixtures that start a real sshd and a single-node Slurm on loopback."""
