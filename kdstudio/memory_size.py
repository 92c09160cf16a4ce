"""Memory sizes as DuckDB spells them ("128MB", "1.5GiB"): decimal units (MB = 10^6 bytes), binary ones with an i."""

from __future__ import annotations

import re

MEMORY_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT])(i?)B", re.IGNORECASE)
_POWER = {"K": 1, "M": 2, "G": 3, "T": 4}


def memory_bytes(size: str) -> int:
    """The bytes in `size`, which must match MEMORY_SIZE (ValueError otherwise)."""
    found = MEMORY_SIZE.fullmatch(size.strip())
    if found is None:
        raise ValueError(f"not a memory size: {size!r}")
    number, unit, binary = found.groups()
    return int(float(number) * (1024 if binary else 1000) ** _POWER[unit.upper()])
