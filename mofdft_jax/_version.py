"""Single source of the package version (read by pyproject through importlib.metadata at runtime)."""

from importlib import metadata

try:
    __version__ = metadata.version("mofdft_jax")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"
