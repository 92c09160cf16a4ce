"""The labels out: the labelled documents written as CSV, JSONL or Parquet (by the file's extension), a batch at a time
and renamed into place when whole, with a dataset card beside them that says what is in them and how far the teacher
can be trusted."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from kdstudio.errors import KdError
from kdstudio.estimates import Estimate, wilson

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}


def format_of(path: Path) -> str:
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise KdError(f"{path.name}: cannot tell the format from its extension",
                      "name the file .csv, .jsonl or .parquet")
    return found


def card_path(path: Path) -> Path:
    """The dataset card beside `path`: labels.parquet -> labels.card.md."""
    return path.with_name(f"{path.stem}.card.md")


@dataclass
class Written:
    """What an export wrote: counts by label and by source, and the teacher graded against each truth."""

    path: Path
    card: Path
    rows: int = 0
    by_label: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    by_label_source: Counter[tuple[str, str]] = field(default_factory=Counter)
    teacher: list[tuple[str, Estimate]] = field(default_factory=list)  # (teacher model, accuracy against a truth)
    suspicion: bool = False

    def count(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        labels, sources = batch.column("label").to_pylist(), batch.column("source").to_pylist()
        self.by_label.update(labels)
        self.by_source.update(sources)
        self.by_label_source.update(zip(labels, sources, strict=True))


class _Jsonl:
    """JSON Lines, one object a row; every string escaped by json (control characters included)."""

    def __init__(self, path: Path) -> None:
        self.handle = path.open("w", encoding="utf-8", newline="\n")

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self.handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in batch.to_pylist())

    def close(self) -> None:
        self.handle.close()


def _writer(kind: str, path: Path, schema: pa.Schema) -> Any:
    if kind == "parquet":
        return pq.ParquetWriter(path, schema)
    if kind == "csv":
        return pacsv.CSVWriter(path, schema)
    return _Jsonl(path)


def with_suspicion(batches: Iterable[pa.RecordBatch], suspicion: dict[str, float] | None,
                   at_least: float | None) -> Iterator[pa.RecordBatch]:
    """Each batch with the audit's suspicion of its teacher labels (null where the audit did not judge one: people's
    and gold labels), and without the rows below `at_least`."""
    for batch in batches:
        scores = [suspicion.get(d) for d in batch.column("id").to_pylist()] if suspicion is not None else \
            [None] * batch.num_rows
        batch = pa.RecordBatch.from_arrays([*batch.columns, pa.array(scores, pa.float64())],
                                           names=[*batch.schema.names, "suspicion"])
        if at_least is not None:
            batch = batch.filter(pc.fill_null(pc.greater_equal(batch.column("suspicion"), at_least), False))
        if batch.num_rows:
            yield batch


def write_labels(batches: Iterable[pa.RecordBatch], written: Written) -> Written:
    """Write `batches` to `written.path` (replaced whole, or left as it was if anything fails)."""
    kind = format_of(written.path)
    partial = written.path.with_name(f".{written.path.name}.{os.getpid()}.partial")
    writer = None
    try:
        for batch in batches:
            if writer is None:
                writer = _writer(kind, partial, batch.schema)
            writer.write_batch(batch)
            written.count(batch)
        if writer is None:
            raise KdError("no labelled document matches", "loosen the filters (see `kdstudio labels export -h`)")
        writer.close()
        os.replace(partial, written.path)
    finally:
        if writer is not None and partial.exists():
            writer.close()
        partial.unlink(missing_ok=True)
    return written


def grade_teachers(rows: list[tuple[str, str, int, int]]) -> list[tuple[str, Estimate]]:
    return [(model, wilson(right, checked, truth)) for model, truth, right, checked in rows if checked]


def write_card(written: Written, project: str, filters: str) -> None:
    from kdstudio.dataset_card import render_dataset_card

    partial = written.card.with_name(f".{written.card.name}.partial")
    partial.write_text(render_dataset_card(written, project, filters), encoding="utf-8")
    os.replace(partial, written.card)
