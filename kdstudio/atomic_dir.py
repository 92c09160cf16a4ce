"""Replacing a folder as one step: a new version is built beside it and swapped in with a rename, so that a killed
export leaves the previous model intact (never a 0-byte model.onnx, never an int8 model under an fp32 card) and the
next export removes what the killed one left behind."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kdstudio.errors import KdError

NEW, OLD = "new", "old"
AT_FDCWD = -100
RENAME_EXCHANGE = 2


def _leftover_name(target: Path, kind: str, pid: int) -> Path:
    return target.parent / f".{target.name}.kdstudio-{kind}-{pid}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(target: Path) -> None:
    """Remove the staging folders of exports that were killed; a previous version moved aside and never removed
    (a kill between two renames, where the system cannot swap atomically) goes back in place."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.kdstudio-({NEW}|{OLD})-(\d+)")
    for path in sorted(target.parent.glob(f".{target.name}.kdstudio-*")):
        found = pattern.fullmatch(path.name)
        if found is None:
            continue
        kind, pid = found.group(1), int(found.group(2))
        if pid != os.getpid() and _alive(pid):
            continue  # another export to the same folder is running: its staging folder is its own
        if kind == OLD and not target.exists():
            path.rename(target)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one system call (Linux renameat2); False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    return renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0


def check_replaceable(target: Path, marker: str) -> None:
    """Only a folder this tool wrote (it holds `marker`) is ever replaced: never a user's other folder."""
    if target.exists() and not target.is_dir():
        raise KdError(f"{target} exists and is not a folder", "choose another --out")
    if target.is_dir() and any(target.iterdir()) and not (target / marker).is_file():
        raise KdError(f"{target} is a folder that does not hold an exported model; it is not replaced",
                      "choose a new or empty folder for --out, e.g. a sibling of the project")


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """Yields an empty folder beside `target` to build the new version in; on success it becomes `target` in one
    rename (the previous version is removed after), on any failure it is removed and `target` is untouched."""
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    staging = _leftover_name(target, NEW, os.getpid())
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not target.exists():
        staging.rename(target)
    elif _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # it now holds the previous version
    else:
        aside = _leftover_name(target, OLD, os.getpid())
        target.rename(aside)
        staging.rename(target)
        shutil.rmtree(aside, ignore_errors=True)
