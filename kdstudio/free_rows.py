"""The rows a round may choose from (the pool less what the run has taken), in row order, without listing them: a
pool of 20M documents would list 160 MB of rows every round for a selector that samples a few dozen."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

# Rows per block of the count that finds the p-th free row; a lookup lists the free rows of one block.
BLOCK = 65536
# Blocks kept listed between lookups: a stream over the pool asks for each block once or twice in a row.
KEPT = 8


# Set bits in each byte value: counts a packed mask without unpacking it.
_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


class PoolMask:
    """A mask of rows held as bits, one a row (a bool array takes eight: 10 MB at 10M documents, the most a run held
    per pool document). Read like a bool array: `mask[start:stop]` and `mask[rows]` give bools; set with
    `mask[:] = flag` or `mask[rows] = flag`."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._bits = np.zeros((size + 7) // 8, dtype=np.uint8)

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self._size)
            if step != 1:
                raise ValueError("a PoolMask is read in steps of one")
            if stop <= start:
                return np.zeros(0, dtype=bool)
            first = start // 8
            bits = np.unpackbits(self._bits[first:(stop + 7) // 8], bitorder="little")
            return bits[start - 8 * first:stop - 8 * first].astype(bool)
        rows = np.asarray(key, dtype=np.int64)
        return ((self._bits[rows >> 3] >> (rows & 7).astype(np.uint8)) & 1).astype(bool)

    def __setitem__(self, key: slice | np.ndarray, flag: bool) -> None:
        if isinstance(key, slice):
            if key != slice(None):
                raise ValueError("a PoolMask is set whole or by rows")
            self._bits[:] = 0xFF if flag else 0
            if flag and self._size % 8:  # the last byte's bits past the end stay clear
                self._bits[-1] = (1 << (self._size % 8)) - 1
            return
        rows = np.asarray(key, dtype=np.int64)
        bits = (np.uint8(1) << (rows & 7).astype(np.uint8))
        if flag:
            np.bitwise_or.at(self._bits, rows >> 3, bits)
        else:
            np.bitwise_and.at(self._bits, rows >> 3, ~bits)

    def sum(self) -> int:
        return int(_BITS[self._bits].sum(dtype=np.int64))

    def extend(self, rows: int) -> None:
        """`rows` more rows, none set."""
        self._size += rows
        self._bits = np.concatenate([self._bits, np.zeros((self._size + 7) // 8 - len(self._bits), dtype=np.uint8)])


def block_counts(pool: np.ndarray | PoolMask) -> np.ndarray:
    """How many pool rows each block holds (what `FreeRows` needs of the pool mask, counted once a run)."""
    # Block by block: np.add.reduceat would first copy the whole mask as 64-bit integers (160 MB at 20M documents).
    return np.array([np.count_nonzero(pool[start:start + BLOCK]) for start in range(0, len(pool), BLOCK)],
                    dtype=np.int64)


class FreeRows:
    """Sorted rows where `pool` is set and that are not `taken`: `len`, indexing by position (an array of them, or a
    slice) and `searchsorted` behave as on `np.flatnonzero(mask)` of that set. `pool` is read, never written, and must
    not change while this lives."""

    def __init__(self, pool: np.ndarray | PoolMask, taken: np.ndarray, counts: np.ndarray | None = None) -> None:
        self._pool = pool
        taken = np.unique(np.asarray(taken, dtype=np.int64))
        self._taken = taken[pool[taken]] if len(taken) else taken
        counts = (block_counts(pool) if counts is None else counts).copy()
        np.subtract.at(counts, self._taken // BLOCK, 1)
        self._starts = np.concatenate([[0], np.cumsum(counts)])  # the position of each block's first free row
        self._listed: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _block(self, block: int) -> np.ndarray:
        rows = self._listed.get(block)
        if rows is None:
            start = block * BLOCK
            rows = start + np.flatnonzero(self._pool[start:start + BLOCK])
            taken = self._taken[(self._taken >= start) & (self._taken < start + BLOCK)]
            rows = np.setdiff1d(rows, taken, assume_unique=True) if len(taken) else rows
            self._listed[block] = rows
            if len(self._listed) > KEPT:
                self._listed.popitem(last=False)
        else:
            self._listed.move_to_end(block)
        return rows

    def __getitem__(self, positions: np.ndarray | slice) -> np.ndarray:
        if isinstance(positions, slice):
            positions = np.arange(*positions.indices(len(self)))
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"positions must lie in [0, {len(self)})")
        blocks = np.searchsorted(self._starts, positions, side="right") - 1
        out = np.empty(len(positions), dtype=np.int64)
        for block in np.unique(blocks):
            where = np.flatnonzero(blocks == block)
            out[where] = self._block(int(block))[positions[where] - self._starts[block]]
        return out

    def searchsorted(self, rows: np.ndarray) -> np.ndarray:
        """Where each of `rows` is, or would be inserted, among the free rows (rows past the pool go last)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros(len(rows), dtype=np.int64)
        if len(self._starts) < 2:  # an empty pool
            return out
        blocks = np.clip(rows // BLOCK, 0, len(self._starts) - 2)
        for block in np.unique(blocks):
            where = np.flatnonzero(blocks == block)
            out[where] = self._starts[block] + np.searchsorted(self._block(int(block)), rows[where])
        return out
