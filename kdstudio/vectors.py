"""The one conversion between Arrow list columns (how DuckDB and Parquet hold vectors) and numpy matrices."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def vectors_column(matrix: np.ndarray) -> pa.Array:
    """A float32 matrix as a list<float32> column, the type DuckDB stores vectors in."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
    return fixed.cast(pa.list_(pa.float32()))


def column_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list<float32> column back as an (n, dim) float32 matrix, without a Python loop."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, -1)
