"""kdstudio: distill an LLM's judgement into a small, fast classifier."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kdstudio")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
