"""Paging through the corpus with filters, for the terminal UI: one page is read at a time, never the corpus."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdstudio.store.store import Store


def current_labels(where: str = "") -> str:
    """The effective label of each document: its newest human label, else its newest teacher label."""
    return ("SELECT doc_id, arg_max(label, (source = 'human', id)) AS label, "
            "arg_max(source, (source = 'human', id)) AS label_source, "
            f"arg_max(confidence, (source = 'human', id)) AS confidence FROM labels {where} GROUP BY doc_id")


@dataclass
class DocRow:
    id: str
    split: str
    source: str
    text: str
    gold: str | None
    label: str | None
    label_source: str | None
    confidence: float | None


@dataclass
class Filters:
    search: str | None = None  # case-insensitive substring of the text
    label: str | None = None
    label_source: str | None = None  # teacher, human, or "none" for unlabelled documents
    split: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None


@dataclass
class Page:
    rows: list[DocRow]
    total: int
    offset: int
    size: int
    filters: Filters = field(default_factory=Filters)


class Browse:
    def __init__(self, store: Store) -> None:
        self.con = store.con

    def _where(self, f: Filters) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if f.search:
            clauses.append("d.text ILIKE ?")
            params.append(f"%{f.search}%")
        if f.split:
            clauses.append("d.split = ?")
            params.append(f.split)
        if f.label:
            clauses.append("c.label = ?")
            params.append(f.label)
        if f.label_source == "none":
            clauses.append("c.label IS NULL")
        elif f.label_source:
            clauses.append("c.label_source = ?")
            params.append(f.label_source)
        if f.min_confidence is not None:
            clauses.append("c.confidence >= ?")
            params.append(f.min_confidence)
        if f.max_confidence is not None:
            clauses.append("c.confidence <= ?")
            params.append(f.max_confidence)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def page(self, filters: Filters, offset: int, size: int, text_chars: int = 300) -> Page:
        where, params = self._where(filters)
        by_label = any(v is not None for v in (filters.label, filters.label_source, filters.min_confidence,
                                               filters.max_confidence))
        # Without a label filter the documents are paged alone, and labels are then read for that page only.
        base = f"FROM documents d LEFT JOIN ({current_labels()}) c ON c.doc_id = d.id{where}" if by_label \
            else f"FROM documents d{where}"
        total = self.con.execute(f"SELECT count(*) {base}", params).fetchall()[0][0]
        rows = self.con.execute(f"WITH p AS (SELECT d.id {base} ORDER BY d.id LIMIT ? OFFSET ?) {self._rows_of_page()}",
                                [*params, size, offset, text_chars]).fetchall()
        return Page([DocRow(*r) for r in rows], int(total), offset, size, filters)

    @staticmethod
    def _rows_of_page() -> str:
        """The page's rows with their gold and current labels, given a CTE `p` of its ids."""
        return ("SELECT d.id, d.split, d.source, left(d.text, ?), g.label, c.label, c.label_source, c.confidence "
                "FROM p JOIN documents d ON d.id = p.id LEFT JOIN gold g ON g.doc_id = d.id "
                f"LEFT JOIN ({current_labels('WHERE doc_id IN (SELECT id FROM p)')}) c ON c.doc_id = d.id "
                "ORDER BY d.id")

    def document(self, doc_id: str) -> str | None:
        rows = self.con.execute("SELECT text FROM documents WHERE id = ?", [doc_id]).fetchall()
        return rows[0][0] if rows else None
