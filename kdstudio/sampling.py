"""Stratified slices of Arrow tables: small, representative corpora for tests and quick looks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def stratified_sample(table: pa.Table, n: int, strata: list[str], seed: int = 0) -> pa.Table:
    """Exactly `n` rows (or all of them), each stratum keeping its share by largest remainder, in the table's
    original order."""
    if n >= table.num_rows:
        return table
    columns = [table.column(c).to_pylist() for c in strata]
    groups: dict[tuple, list[int]] = {}
    for index, key in enumerate(zip(*columns, strict=True) if columns else [()] * table.num_rows):
        groups.setdefault(key, []).append(index)
    keys = sorted(groups, key=str)
    shares = np.array([n * len(groups[k]) / table.num_rows for k in keys])
    quotas = np.floor(shares).astype(int)
    for i in np.argsort(-(shares - quotas), kind="stable")[: n - quotas.sum()]:
        quotas[i] += 1
    rng = np.random.default_rng(seed)
    chosen = [i for k, q in zip(keys, quotas, strict=True) for i in rng.choice(groups[k], size=q, replace=False)]
    return table.take(sorted(chosen))
