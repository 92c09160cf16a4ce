"""Which tests exercise a real part, measured while they run: a real model (MiniLM, the static encoder, a fine-tuned
MiniLM), an ONNX export or the onnxruntime runtime, a server (the fake LLM over HTTP, Label Studio, Ray), or a signal
sent to a real process. With KDSTUDIO_REAL_PARTS_LOG=FILE set, the test process (tests/conftest.py) and every kdstudio
process a test starts (through the test plugin, tests/kdstudio_testkit.py) append one JSON line per use to FILE,
tagged with the test's id (KDSTUDIO_TEST_ID, set around each test). A part that a fixture builds once and many tests
share counts for every test that uses the fixture. Then:

    KDSTUDIO_REAL_PARTS_LOG=/tmp/parts.jsonl .venv/bin/python -m pytest
    .venv/bin/python tests/real_parts.py /tmp/parts.jsonl          # the tests, by real part

tests/real_parts_plugin.py tells it which test or shared fixture runs (tests/conftest.py loads it; `-p
real_parts_plugin` and a `sitecustomize` that calls `install()` measure a tree without them): docs/testing.md lists
what it found before and after the split into tiers."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections import defaultdict
from collections.abc import Callable
from typing import Any

LOG, TEST = "KDSTUDIO_REAL_PARTS_LOG", "KDSTUDIO_TEST_ID"
SIGNALS = {signal.SIGKILL, signal.SIGINT, signal.SIGTERM}


def record(part: str, test: str | None = None, **more: Any) -> None:
    path, test = os.environ.get(LOG), test or os.environ.get(TEST)
    if path and test:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"test": test, "part": part, "pid": os.getpid(), **more}) + "\n")


def _wrap(owner: Any, name: str, part: str, when: Callable[..., bool] = lambda *a, **k: True) -> None:
    original = getattr(owner, name)
    if getattr(original, "_real_part", False):
        return

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            record(part)
        return original(*args, **kwargs)

    wrapper._real_part = True  # type: ignore[attr-defined]
    setattr(owner, name, wrapper)


def install() -> None:
    """Hook the real parts (imported lazily: hooking one must not load it)."""
    if not os.environ.get(LOG):
        return
    import subprocess

    import kdstudio.runtime
    from kdstudio_plugins.encoders.minilm import SentenceTransformerEncoder
    from kdstudio_plugins.encoders.static import StaticEncoder
    from kdstudio_plugins.engines.ray_engine import RayEngine
    from kdstudio_plugins.exporters.onnx_export import OnnxExporter
    from kdstudio_plugins.review.labelstudio import LabelStudioBackend
    from kdstudio_plugins.students.finetune import FineTunedStudent
    from kdstudio_plugins.teachers.transport import Transport

    _wrap(SentenceTransformerEncoder, "load", "model: MiniLM")
    _wrap(StaticEncoder, "load", "model: static encoder")
    _wrap(FineTunedStudent, "fit", "model: fine-tuned MiniLM")
    _wrap(OnnxExporter, "export", "onnx export")
    _wrap(kdstudio.runtime.Classifier, "__init__", "onnx runtime")
    _wrap(Transport, "complete", "server: LLM over HTTP")
    _wrap(LabelStudioBackend, "client", "server: Label Studio")
    _wrap(RayEngine, "__init__", "server: Ray")
    _wrap(os, "kill", "signal to a real process", lambda pid, sig: sig in SIGNALS)
    _wrap(subprocess.Popen, "send_signal", "signal to a real process", lambda self, sig: sig in SIGNALS)
    _wrap(subprocess.Popen, "kill", "signal to a real process")


FIXTURE, USES = "fixture:", "uses fixtures"  # what tests/real_parts_plugin.py writes


def report(path: str) -> dict[str, list[str]]:
    """Test id -> the real parts it used (sorted), from a log: its own and those of the shared fixtures it uses."""
    found: dict[str, set[str]] = defaultdict(set)
    uses: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as log:
        for line in log:
            entry = json.loads(line)
            if entry["part"] == USES:
                uses[entry["test"]] = entry["fixtures"]
            else:
                found[entry["test"]].add(entry["part"])
    for test, fixtures in uses.items():
        for fixture in fixtures:
            found[test] |= found.get(FIXTURE + fixture, set())
    return {test: sorted(parts) for test, parts in sorted(found.items()) if not test.startswith(FIXTURE) and parts}


if __name__ == "__main__":
    tests = report(sys.argv[1])
    for test, parts in tests.items():
        print(f"{test}\t{', '.join(parts)}")
    print(f"{len(tests)} tests exercise a real part", file=sys.stderr)
