"""Reading scattered vector rows from a pool larger than the page cache: through a memory map (each fault reads the
disk's whole read-ahead window around its row) against positional reads without read-ahead, several blocks at once
(what `VectorShards.read` does for rows scattered over a block). Each read starts cold: the blocks' pages are dropped
from the page cache first (posix_fadvise DONTNEED), and read again warm.

    .venv/bin/python benchmarks/scattered_reads.py                  # the 10M pool of benchmarks/scale.py
    .venv/bin/python benchmarks/scattered_reads.py --pool 1000000   # a smaller one (built if missing)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from kdstudio.store import vector_shards
from kdstudio.store.vector_shards import VectorShards


def drop_from_page_cache(blocks: list[Path]) -> None:
    for path in blocks:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_ahead_kb(path: Path) -> str:
    """The read-ahead of the block device a file lies on (a partition's is its disk's)."""
    device = os.stat(path).st_dev
    found = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
    for queue in (found / "queue", found.parent / "queue", found / ".." / "queue"):
        if (queue / "read_ahead_kb").exists():
            return (queue / "read_ahead_kb").read_text().strip()
    return "?"


def timed_read(shards: VectorShards, rows: np.ndarray, blocks: list[Path]) -> tuple[float, float, np.ndarray]:
    drop_from_page_cache(blocks)
    started = time.perf_counter()
    read = shards.read(rows)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    shards.read(rows)
    return cold, time.perf_counter() - started, read


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pool_memory import build  # the sibling module

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=10_000_000)
    parser.add_argument("--rows", default="32,200,2000,20000")
    args = parser.parse_args()
    directory, _ = build(args.pool)
    shards_dir = next((directory / "p" / "vectors").iterdir())
    shards = VectorShards.open(shards_dir)
    blocks = sorted(shards_dir.glob("block-*"))
    n = (len(blocks) - 1) * shards.block_rows  # rows of the full blocks
    print(f"{args.pool:,} rows in {len(blocks)} blocks ({shards.disk_bytes() / 1e9:.2f} GB); "
          f"the disk's read-ahead: {read_ahead_kb(blocks[0])} KiB", flush=True)
    rng = np.random.default_rng(1)
    gap = vector_shards.SCATTERED_GAP
    for k in (int(x) for x in args.rows.split(",")):
        rows = rng.choice(n, k, replace=False)
        vector_shards.SCATTERED_GAP = 10**12  # every block mapped: the read before this change
        mapped_cold, mapped_warm, mapped = timed_read(shards, rows, blocks)
        vector_shards.SCATTERED_GAP = gap
        cold, warm, positional = timed_read(shards, rows, blocks)
        assert np.array_equal(mapped, positional)
        print(f"{k:6,} scattered rows: mapped {mapped_cold:7.3f} s cold, {mapped_warm:6.4f} s warm; positional "
              f"{cold:6.3f} s cold, {warm:6.4f} s warm; cold {mapped_cold / cold:5.1f}x faster", flush=True)


if __name__ == "__main__":
    main()
