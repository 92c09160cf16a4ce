"""Human review in the store: which teacher labels to send, review projects, and the human labels that come back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from kdstudio.store.store import Store


@dataclass
class Candidate:
    doc_id: str
    text: str
    label: str
    confidence: float | None
    model: str | None


class ReviewStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.con = store.con

    def candidates(self, run_id: int | None = None, teacher: str | None = None) -> list[Candidate]:
        """Documents whose current label is the teacher's (no person has labelled them; the check sample aside), least
        certain first; with `run_id`, the labels that run holds; with `teacher`, those of that model (as `kdstudio
        cost` names it, or the name before its parenthesis: `zeroshot` for `zeroshot(all-MiniLM-L6-v2)`)."""
        rows = self.con.execute(
            """
            WITH teacher AS (
                SELECT l.doc_id, arg_max(l.label, l.id) AS label, arg_max(l.confidence, l.id) AS confidence,
                       arg_max(c.model, l.id) AS model
                FROM labels l LEFT JOIN teacher_calls c ON c.id = l.teacher_call_id
                WHERE l.source = 'teacher' AND (? IS NULL OR l.run_id = ?)
                  AND (? IS NULL OR c.model = ? OR starts_with(c.model, ? || '('))
                GROUP BY l.doc_id
            )
            SELECT t.doc_id, d.text, t.label, t.confidence, t.model FROM teacher t
            JOIN documents d ON d.id = t.doc_id
            -- the check sample is labelled blind (`check` filter and order), never beside the teacher's answer
            WHERE d.split <> 'check'
              AND NOT EXISTS (SELECT 1 FROM labels h WHERE h.doc_id = t.doc_id AND h.source = 'human')
            ORDER BY t.confidence ASC NULLS FIRST, t.doc_id
            """, [run_id, run_id, teacher, teacher, teacher]
        ).fetchall()
        return [Candidate(*row) for row in rows]

    def ignore(self, doc_id: str, annotator: str | None) -> int:
        """A person passed over a document in Triage: recorded, so that it leaves their queue."""
        with self.store.transaction() as con:
            return int(con.execute("INSERT INTO ignored (doc_id, annotator) VALUES (?, ?) RETURNING id",
                                   [doc_id, annotator]).fetchall()[0][0])

    def unignore(self, ignore_id: int) -> None:
        with self.store.transaction() as con:
            con.execute("DELETE FROM ignored WHERE id = ?", [ignore_id])

    def ignored(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT DISTINCT doc_id FROM ignored").fetchall()}

    def project_ref(self, backend: str, location: str) -> str | None:
        rows = self.con.execute("SELECT external_id FROM review_projects WHERE backend = ? AND location = ?",
                                [backend, location]).fetchall()
        return rows[0][0] if rows else None

    def save_project_ref(self, backend: str, location: str, external_id: str) -> None:
        with self.store.transaction() as con:
            con.execute("DELETE FROM review_projects WHERE backend = ? AND location = ?", [backend, location])
            con.execute("INSERT INTO review_projects (backend, location, external_id) VALUES (?, ?, ?)",
                        [backend, location, external_id])

    def add_human_labels(self, labels: Sequence[tuple[str, str, str | None, object, str]]) -> tuple[int, int, int]:
        """(doc id, label, annotator, annotated at, review ref) rows, in one transaction. A ref already stored
        adds nothing; a document that is not in the project is not labelled. Returns (added, already, unknown)."""
        if not labels:
            return 0, 0, 0
        table = pa.table({
            "doc_id": [x[0] for x in labels], "label": [x[1] for x in labels], "annotator": [x[2] for x in labels],
            "annotated_at": pa.array([x[3] for x in labels], pa.timestamp("us", tz="UTC")),
            "ref": [x[4] for x in labels],
        })
        self.con.register("_human", table)
        try:
            with self.store.transaction() as con:
                unknown = con.execute("SELECT count(*) FROM _human h ANTI JOIN documents d ON d.id = h.doc_id"
                                      ).fetchall()[0][0]
                already = con.execute("SELECT count(*) FROM _human h SEMI JOIN labels l ON l.review_ref = h.ref"
                                      ).fetchall()[0][0]
                added = con.execute(
                    """
                    INSERT INTO labels (doc_id, label, source, confidence, annotator, annotated_at, review_ref)
                    SELECT h.doc_id, h.label, 'human', 1.0, h.annotator, h.annotated_at::TIMESTAMP, h.ref
                    FROM _human h SEMI JOIN documents d ON d.id = h.doc_id
                    ANTI JOIN labels l ON l.review_ref = h.ref
                    ORDER BY h.annotated_at
                    """
                ).fetchall()
        finally:
            self.con.unregister("_human")
        return int(added[0][0]) if added else 0, int(already), int(unknown)

    def withdraw(self, prefixes: Sequence[str]) -> int:
        """Take back the human labels whose review ref starts with one of `prefixes` (an annotation deleted in the
        review tool, or turned into a skip); the teacher's label, if any, is the document's label again."""
        if not prefixes:
            return 0
        return self._delete([i for i, ref in self._human_refs() if ref.startswith(tuple(prefixes))])

    def withdraw_missing(self, scope: str, present: set[str]) -> int:
        """Take back the labels from one review project (refs starting with `scope`) whose annotation is no longer
        there: `present` holds the ref prefixes of the annotations it still has."""
        kept = tuple(present)
        return self._delete([i for i, ref in self._human_refs(scope) if not (kept and ref.startswith(kept))])

    def _human_refs(self, scope: str = "") -> list[tuple[int, str]]:
        return self.con.execute("SELECT id, review_ref FROM labels WHERE source = 'human' AND "
                                "starts_with(review_ref, ?)", [scope]).fetchall()

    def _delete(self, ids: list[int]) -> int:
        if ids:
            with self.store.transaction() as con:
                con.execute("DELETE FROM labels WHERE id IN (SELECT unnest(?::BIGINT[]))", [ids])
        return len(ids)

    def agreement_pairs(self) -> list[tuple[str, str, str]]:
        """(doc id, the teacher's label, the person's label) for every document that has both, newest of each."""
        return self.con.execute(
            """
            WITH teacher AS (SELECT doc_id, arg_max(label, id) AS label FROM labels WHERE source = 'teacher'
                             GROUP BY doc_id),
                 human AS (SELECT doc_id, arg_max(label, id) AS label FROM labels WHERE source = 'human'
                           GROUP BY doc_id)
            SELECT t.doc_id, t.label, h.label FROM teacher t JOIN human h USING (doc_id) ORDER BY 1
            """
        ).fetchall()
