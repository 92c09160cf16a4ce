"""The labelled documents as a dataset: one row per document with its current label (a person's over the teacher's,
the newest of each, the corpus's own gold label where neither), who gave it, and what else is known about it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from kdstudio.store.store import Store

LABEL_SOURCES = ("human", "teacher", "gold")
SPLITS = ("pool", "val", "test", "check")
COLUMNS = ("id", "text", "label", "source", "annotator", "teacher_model", "teacher_label", "teacher_confidence",
           "run_id", "split", "gold_label", "generated")


@dataclass(frozen=True)
class LabelFilter:
    """Which labelled documents: by who gave the current label, by split, by the run that bought the teacher's."""

    sources: tuple[str, ...] = LABEL_SOURCES
    splits: tuple[str, ...] = SPLITS
    run_id: int | None = None

    def describe(self, min_suspicion: float | None = None) -> str:
        parts = [f"labels by {', '.join(self.sources)}" if set(self.sources) != set(LABEL_SOURCES) else "every label",
                 f"splits {', '.join(self.splits)}" if set(self.splits) != set(SPLITS) else "every split"]
        if self.run_id is not None:
            parts.append(f"documents run {self.run_id} bought")
        if min_suspicion is not None:
            parts.append(f"teacher labels with suspicion at least {min_suspicion:g}")
        return "; ".join(parts)


_QUERY = """
WITH teacher AS (
    SELECT l.doc_id, arg_max(l.label, l.id) AS label, arg_max(l.confidence, l.id) AS confidence,
           arg_max(l.run_id, l.id) AS run_id, arg_max(c.model, l.id) AS model
    FROM labels l LEFT JOIN teacher_calls c ON c.id = l.teacher_call_id
    WHERE l.source = 'teacher' AND ($run IS NULL OR l.run_id = $run)
    GROUP BY l.doc_id
), human AS (
    SELECT doc_id, arg_max(label, id) AS label, arg_max(annotator, id) AS annotator
    FROM labels WHERE source = 'human' GROUP BY doc_id
), labelled AS (
    SELECT d.id, d.text, coalesce(h.label, t.label, g.label) AS label,
           CASE WHEN h.label IS NOT NULL THEN 'human' WHEN t.label IS NOT NULL THEN 'teacher' ELSE 'gold' END
               AS source,
           h.annotator, t.model AS teacher_model, t.label AS teacher_label, t.confidence AS teacher_confidence,
           t.run_id, d.split, g.label AS gold_label, d.source = 'synthetic' AS generated
    FROM documents d
    LEFT JOIN teacher t ON t.doc_id = d.id
    LEFT JOIN human h ON h.doc_id = d.id
    LEFT JOIN gold g ON g.doc_id = d.id
    WHERE ($run IS NULL OR t.doc_id IS NOT NULL)
)
SELECT * FROM labelled
WHERE label IS NOT NULL AND list_contains($sources, source) AND list_contains($splits, split)
ORDER BY id
"""


def labelled_batches(store: Store, where: LabelFilter, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
    """The rows `where` asks for, in id order, a batch at a time (read on a cursor of its own)."""
    cursor = store.con.cursor()
    try:
        params = {"run": where.run_id, "sources": list(where.sources), "splits": list(where.splits)}
        yield from cursor.sql(_QUERY, params=params).to_arrow_reader(batch_rows)
    finally:
        cursor.close()


def teacher_against_truth(store: Store) -> list[tuple[str, str, int, int]]:
    """(teacher model, truth, right, checked): each teacher's own answers (not a person's correction) against people's
    labels on the check sample (random), against gold, and against people's other labels (reviewed: not random)."""
    return store.con.execute("""
        WITH teacher AS (
            SELECT l.doc_id, arg_max(l.label, l.id) AS label, arg_max(c.model, l.id) AS model
            FROM labels l LEFT JOIN teacher_calls c ON c.id = l.teacher_call_id
            WHERE l.source = 'teacher' GROUP BY l.doc_id
        ), human AS (
            SELECT doc_id, arg_max(label, id) AS label FROM labels WHERE source = 'human' GROUP BY doc_id
        ), truths AS (
            SELECT t.model, CASE WHEN d.split = 'check' THEN 'people, check sample' ELSE 'people, reviewed' END
                       AS truth, t.label = h.label AS agrees
            FROM teacher t JOIN human h ON h.doc_id = t.doc_id JOIN documents d ON d.id = t.doc_id
            UNION ALL
            SELECT t.model, 'gold', t.label = g.label FROM teacher t JOIN gold g ON g.doc_id = t.doc_id
        )
        SELECT coalesce(model, 'unknown'), truth, count_if(agrees), count(*) FROM truths
        GROUP BY ALL ORDER BY 1, 2
    """).fetchall()
