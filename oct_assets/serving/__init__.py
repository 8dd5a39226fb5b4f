"""Serving beside the ML core: the champion rule, the model card, scoring of new scans and the
TorchScript export. Runs where the store is (never shipped to a node); imports `ml`, `dataset`
and `contracts`, never Dagster."""
