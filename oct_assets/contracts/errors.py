"""Exceptions of the ML core; all are ValueErrors so callers can catch bad input in one place."""


class OctMLError(ValueError):
    """Bad input to the ML core: the message names the file or setting at fault."""


class SampleError(OctMLError):
    """The sample folder (images.csv, manifest.json, class balance) is unusable."""


class ImageDecodeError(OctMLError):
    """An image in the sample is missing, truncated, empty or not an image; names the path."""


class DamagedFileError(OctMLError):
    """A file this project wrote (a manifest, a pointer, a model) cannot be read back; names it."""
