"""The rows a round may choose from, never listed whole (issue 29): whatever the pool and the taken rows, FreeRows
answers as the listed rows `np.flatnonzero(pool less taken)` would, across block boundaries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdstudio import free_rows
from kdstudio.free_rows import FreeRows


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(free_rows, "BLOCK", 7)
    monkeypatch.setattr(free_rows, "KEPT", 2)


@settings(max_examples=200, deadline=None)
@given(pool=st.lists(st.booleans(), max_size=60), data=st.data())
def test_free_rows_answer_as_the_listed_rows_would(pool: list[bool], data):
    mask = np.array(pool, dtype=bool)
    taken = np.array(data.draw(st.lists(st.integers(0, max(len(pool) - 1, 0)), max_size=10)) if pool else [],
                     dtype=np.int64)
    listed = mask.copy()
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
