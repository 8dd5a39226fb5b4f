"""The OCT2017 image folder, no Dagster: scan + fingerprint, image
validity, patient-aware sampling, the synthetic set."""
