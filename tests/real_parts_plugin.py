"""The pytest side of tests/real_parts.py: which test, or which fixture shared by several tests, is running (in the
environment, for this process and the kdstudio processes it starts), and which fixtures each test uses."""

from __future__ import annotations

import os
from typing import Any

import pytest
import real_parts


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    os.environ[real_parts.TEST] = item.nodeid
    real_parts.record(real_parts.USES, fixtures=sorted(getattr(item, "fixturenames", ())))
    try:
        return (yield)
    finally:
        os.environ.pop(real_parts.TEST, None)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> Any:
    """What a fixture wider than one test builds is its own, and then every test's that uses it."""
    if fixturedef.scope == "function":
        return (yield)
    was = os.environ.get(real_parts.TEST)
    os.environ[real_parts.TEST] = real_parts.FIXTURE + fixturedef.argname
    try:
        return (yield)
    finally:
        if was is None:
            os.environ.pop(real_parts.TEST, None)
        else:
            os.environ[real_parts.TEST] = was
