"""The rows a round may choose from, never listed whole (issue 29): whatever the pool and the taken rows, FreeRows
answers as the listed rows `np.flatnonzero(pool less taken)` would, across block boundaries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdstudio import free_rows
from kdstudio.free_rows import FreeRows, PoolMask


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(free_rows, "BLOCK", 7)
    monkeypatch.setattr(free_rows, "KEPT", 2)


def packed(flags: np.ndarray) -> PoolMask:
    mask = PoolMask(len(flags))
    mask[np.flatnonzero(flags)] = True
    return mask


@settings(max_examples=200, deadline=None)
@given(pool=st.lists(st.booleans(), max_size=60), data=st.data(), bits=st.booleans())
def test_free_rows_answer_as_the_listed_rows_would(pool: list[bool], data, bits: bool):
    flags = np.array(pool, dtype=bool)
    mask = packed(flags) if bits else flags
    taken = np.array(data.draw(st.lists(st.integers(0, max(len(pool) - 1, 0)), max_size=10)) if pool else [],
                     dtype=np.int64)
    listed = flags.copy()
    listed[taken] = False
    expected = np.flatnonzero(listed)
    free = FreeRows(mask, taken)
    assert len(free) == len(expected)
    assert free[:].tolist() == expected.tolist()
    if len(expected):
        positions = np.array(data.draw(st.lists(st.integers(0, len(expected) - 1), max_size=20)), dtype=np.int64)
        assert free[positions].tolist() == expected[positions].tolist()
        assert free[3:11].tolist() == expected[3:11].tolist()
    rows = np.array(data.draw(st.lists(st.integers(0, len(pool) + 10), max_size=20)), dtype=np.int64)
    assert free.searchsorted(rows).tolist() == np.searchsorted(expected, rows).tolist()


def test_a_position_outside_the_free_rows_is_refused():
    free = FreeRows(np.ones(10, dtype=bool), np.array([2]))
    with pytest.raises(IndexError):
        free[np.array([9])]
    assert free[np.array([8])].tolist() == [9]


def test_the_pool_mask_is_never_copied_or_written():
    mask = np.ones(30, dtype=bool)
    free = FreeRows(mask, np.array([0, 29]))
    free[np.arange(len(free))]
    assert mask.all() and free._pool is mask


@settings(max_examples=200, deadline=None)
@given(flags=st.lists(st.booleans(), max_size=70), data=st.data())
def test_a_pool_mask_of_bits_reads_and_writes_as_a_bool_array_does(flags: list[bool], data):
    expected = np.array(flags, dtype=bool)
    mask = packed(expected)
    assert len(mask) == len(expected) and mask.sum() == expected.sum()
    assert mask[:].tolist() == expected.tolist()
    start = data.draw(st.integers(0, len(flags)))
    stop = data.draw(st.integers(0, len(flags) + 3))
    assert mask[start:stop].tolist() == expected[start:stop].tolist()
    rows = np.array(data.draw(st.lists(st.integers(0, max(len(flags) - 1, 0)), max_size=12)) if flags else [],
                    dtype=np.int64)
    assert mask[rows].tolist() == expected[rows].tolist()
    flag = data.draw(st.booleans())
    mask[rows], expected[rows] = flag, flag  # a row given twice is set once
    assert mask[:].tolist() == expected.tolist()
    mask[:], expected[:] = True, True
    assert mask.sum() == len(flags) and mask[:].all()  # no bit past the end is counted
    mask.extend(5)
    assert len(mask) == len(flags) + 5 and mask.sum() == len(flags) and not mask[len(flags):].any()
    with pytest.raises(ValueError):
        mask[0:4:2]
