"""The ML code version: the `code_version` of every asset whose output the ML core computes
(`trained_model`, `cluster_model`, and `predictions` with the other evaluations), so that a
change in what a config trains or what an evaluation reports moves all their salts together.

Bump it when a change to `ml/` changes the weights a config trains or the figures an
evaluation writes. 2: the data-parallel loop, decoder v2 (band), patient-bootstrap intervals
and ROC AUC in metrics.json.
"""

ML_CODE_VERSION = "2"
