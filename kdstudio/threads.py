"""How many threads the numerical libraries may use while a run trains and scores students: the one place that
decides it.

A round fits small models (hundreds to thousands of rows): BLAS threads cost more in hand-offs than they give, and
on a busy two-core machine they wait on each other. Measured on 2 cores with the machine busy, a logistic
regression fit took 2.2-4.6 s with the default threads against 0.13-0.15 s with one (results equal to 1e-3), so a
run uses one unless `KDSTUDIO_THREADS` says otherwise. Embedding (torch) keeps its own pool: there the work is big.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import threadpool_limits

from kdstudio.errors import KdError

ENV = "KDSTUDIO_THREADS"


def run_threads() -> int:
    raw = os.environ.get(ENV, "1").strip()
    if not raw.isdigit() or int(raw) < 1:
        raise KdError(f"{ENV}={raw!r} is not a number of threads", f"set {ENV} to 1 or more, or unset it")
    return int(raw)


@contextmanager
def sized_pools() -> Iterator[None]:
    """BLAS pools limited for the duration (threadpoolctl restores them after); OpenMP (boosting) is left alone."""
    with threadpool_limits(limits=run_threads(), user_api="blas"):
        yield
