"""The hooks a kdstudio plugin may implement. Each `register_*` hook receives a `register` callable and
calls it once per class it contributes; see kdstudio.interfaces for what each kind of class provides."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("kdstudio")
hookimpl = pluggy.HookimplMarker("kdstudio")

Register = Callable[[type], None]


@hookspec
def register_selectors(register: Register) -> None:
    """Contribute selectors: which pool documents are worth a teacher call."""


@hookspec
def register_teachers(register: Register) -> None:
    """Contribute teachers: who labels a document (an LLM, a local model, a simulation, a person)."""


@hookspec
def register_students(register: Register) -> None:
    """Contribute students: the small classifiers that learn from the teacher's labels."""


@hookspec
def register_exporters(register: Register) -> None:
    """Contribute exporters: turn a trained student into a deployable artifact."""


@hookspec
def register_review_backends(register: Register) -> None:
    """Contribute review backends: where people check and correct teacher labels."""


@hookspec
def register_datasets(register: Register) -> None:
    """Contribute datasets that `kdstudio datasets import NAME DIR` can bring into a project."""


@hookspec
def register_engines(register: Register) -> None:
    """Contribute engines: where bulk embedding, pool scoring and prediction run (a Ray cluster, ...)."""


@hookspec
def register_doubts(register: Register) -> None:
    """Contribute label doubts: which teacher labels look wrong (for training that doubts, and for the audit)."""


@hookspec
def register_free_labels(register: Register) -> None:
    """Contribute free labellers: pseudo-labels from the unlabelled pool (self-training, label spreading, ...)."""


@hookspec
def register_encoders(register: Register) -> None:
    """Contribute encoders: what turns texts into the vectors students learn from (a transformer, static embeddings)."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the `kdstudio` click group."""
