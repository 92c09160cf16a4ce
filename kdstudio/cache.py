"""The machine's kdstudio cache: what is built once and reused by every project (the static encoder distilled from
MiniLM, the MiniLM encoder as an ONNX graph). `$KDSTUDIO_CACHE_DIR`, else the XDG user cache folder. Everything is
written beside its place and renamed in, so that a reader never meets half a file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def cache_root() -> Path:
    """Where built artifacts live: $KDSTUDIO_CACHE_DIR, else the XDG user cache folder."""
    explicit = os.environ.get("KDSTUDIO_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdstudio"


def publish_file(source: Path, target: Path) -> bool:
    """Copy `source` to `target` in the cache, atomically; False where the cache cannot be written (then nothing is
    cached, and nothing fails)."""
    staging = target.parent / f".{target.name}.{os.getpid()}.partial"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, staging)
        staging.replace(target)
    except OSError:
        staging.unlink(missing_ok=True)
        return False
    return True
