"""One embedding model's vectors on disk: fixed-size blocks of raw float32 (or float16) rows, addressed by integer
row, read through memory maps that live only as long as one read. DuckDB records which document owns which row and
how many rows are committed; a row past that count (written by a process killed before its commit) belongs to nobody
and the next append writes over it. Nothing here is ever unpickled: a block is numbers, the header is JSON."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdstudio.errors import KdError

FORMAT = 1
META_NAME = "vectors.json"
# Rows per block: 65,536 MiniLM rows are 96 MiB, small enough to map and large enough that a 20M pool is 300 files.
BLOCK_ROWS = 65536
DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
# A block whose rows a read takes fewer than one in this many of is read row by row, not mapped.
SCATTERED_GAP = 64
# Blocks read at once: positional reads wait on the disk, not the interpreter, and a disk serves several together.
READERS = 16
_FIX = "embed again into a new project, or restore the project folder from a copy"


@functools.cache
def _reader_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(READERS, thread_name_prefix="kdstudio-vectors")


os.register_at_fork(after_in_child=_reader_pool.cache_clear)  # a forked child has none of its parent's threads


def _damaged(directory: Path, what: str) -> KdError:
    return KdError(f"the vector shards in {directory} are damaged: {what}", _FIX)


@dataclass(frozen=True)
class VectorShards:
    directory: Path
    dim: int
    dtype: str = "float32"
    block_rows: int = BLOCK_ROWS

    @classmethod
    def create(cls, directory: Path, dim: int, dtype: str = "float32", block_rows: int = BLOCK_ROWS
               ) -> VectorShards:
        """A new, empty set (a folder left by a creation that was never committed is reused)."""
        if dtype not in DTYPES:
            raise KdError(f"unknown vector type {dtype!r}", f"choose one of: {', '.join(DTYPES)}")
        if dim < 1 or block_rows < 1:
            raise KdError(f"vectors need a dimension and a block size of at least 1 (got {dim}, {block_rows})")
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("block-*"):
            stale.unlink()
        meta = {"format": FORMAT, "dim": dim, "dtype": dtype, "block_rows": block_rows}
        staging = directory / f".{META_NAME}.tmp"
        staging.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(staging, directory / META_NAME)
        return cls(directory, dim, dtype, block_rows)

    @classmethod
    def open(cls, directory: Path) -> VectorShards:
        try:
            meta = json.loads((directory / META_NAME).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise _damaged(directory, f"{META_NAME} is missing") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _damaged(directory, f"{META_NAME} is unreadable ({type(exc).__name__})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("dtype") not in DTYPES \
                or not all(isinstance(meta.get(k), int) and meta[k] > 0 for k in ("dim", "block_rows")):
            raise _damaged(directory, f"{META_NAME} does not describe format {FORMAT} vectors")
        return cls(directory, meta["dim"], meta["dtype"], meta["block_rows"])

    @property
    def row_bytes(self) -> int:
        return self.dim * DTYPES[self.dtype].itemsize

    def block_path(self, number: int) -> Path:
        return self.directory / f"block-{number:06d}.{self.dtype}"

    def _spans(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """(block, first row in it, rows) for the rows [start, stop)."""
        row = start
        while row < stop:
            block, offset = divmod(row, self.block_rows)
            count = min(self.block_rows - offset, stop - row)
            yield block, offset, count
            row += count

    def write(self, start: int, matrix: np.ndarray) -> None:
        """Rows `start`, `start + 1`, ... (over whatever an uncommitted write left there)."""
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise KdError(f"vectors of dimension {matrix.shape[-1]} cannot join a set of dimension {self.dim}",
                          "embed with the encoder the project's vectors came from")
        data = np.ascontiguousarray(matrix, dtype=DTYPES[self.dtype])
        done = 0
        for block, offset, count in self._spans(start, start + len(data)):
            fd = os.open(self.block_path(block), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, data[done:done + count], offset * self.row_bytes)  # a view: no copy
            finally:
                os.close(fd)
            done += count

    def _map(self, block: int) -> np.memmap:
        path = self.block_path(block)
        try:
            rows = path.stat().st_size // self.row_bytes
        except FileNotFoundError:
            raise _damaged(self.directory, f"{path.name} is missing") from None
        return np.memmap(path, dtype=DTYPES[self.dtype], mode="r", shape=(rows, self.dim))

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of `rows`, in the order given, as float32. A block the read takes many rows of is mapped for
        this read only, so the pages it touched leave this process's memory with it; rows scattered over a block are
        read one at a time, the blocks in parallel (see `_read_scattered`)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        if not len(rows):
            return out
        blocks = rows // self.block_rows
        scattered = []
        for block in np.unique(blocks):
            where = np.flatnonzero(blocks == block)
            if len(where) * SCATTERED_GAP < self.block_rows:
                scattered.append((int(block), where))
                continue
            offsets = rows[where] - block * self.block_rows
            mapped = self._map(int(block))
            if offsets.max() >= len(mapped) or offsets.min() < 0:
                raise _damaged(self.directory, f"{self.block_path(int(block)).name} is shorter than recorded")
            out[where] = mapped[offsets]
            del mapped
        if scattered:
            list(_reader_pool().map(lambda item: self._read_scattered(item[0], rows[item[1]], out, item[1]),
                                    scattered))
        return out

    def _read_scattered(self, block: int, rows: np.ndarray, out: np.ndarray, where: np.ndarray) -> None:
        """Rows of one block by positional reads, without read-ahead. A fault in a mapping reads the disk's whole
        read-ahead window around the row (8 MiB on this machine's disk): a few dozen random rows of a pool larger than
        the page cache cost hundreds of megabytes that way, and a sample of 20,000 rows the whole file."""
        path = self.block_path(block)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise _damaged(self.directory, f"{path.name} is missing") from None
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            dtype, size = DTYPES[self.dtype], self.row_bytes
            for i, row in zip(where, rows - block * self.block_rows, strict=True):
                data = os.pread(fd, size, int(row) * size) if row >= 0 else b""
                if len(data) != size:
                    raise _damaged(self.directory, f"{path.name} is shorter than recorded")
                out[i] = np.frombuffer(data, dtype=dtype)
        finally:
            os.close(fd)

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as float32, read sequentially."""
        out = np.empty((max(stop - start, 0), self.dim), dtype=np.float32)
        done = 0
        for block, offset, count in self._spans(start, stop):
            mapped = self._map(block)
            if offset + count > len(mapped):
                raise _damaged(self.directory, f"{self.block_path(block).name} is shorter than recorded")
            out[done:done + count] = mapped[offset:offset + count]
            del mapped
            done += count
        return out

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob("block-*"))
