"""The ground floor: folder formats, classes and splits, shared errors and file-system machinery.

`store`, `dataset`, `ml`, `serving` and `cluster` import it; it imports none of them (pure Python,
shipped to compute nodes beside `ml`)."""
