"""The teacher-call ledger (also the cache) and the labels it produces."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from kdstudio.store.store import Store


def request_hash(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass
class CachedCall:
    id: int
    label: str | None
    confidence: float | None
    probs: dict[str, float] | None
    error: str | None


@dataclass
class RunLabel:
    doc_id: str
    label: str
    source: str
    confidence: float | None
    probs: dict[str, float] | None


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.con = store.con

    def cached(self, hashes: list[str]) -> dict[str, CachedCall]:
        """The newest ledger answer for each request hash that was ever sent."""
        if not hashes:
            return {}
        rows = self.con.execute(
            "SELECT request_hash, arg_max(id, id), arg_max(parsed_label, id), arg_max(confidence, id), "
            "arg_max(probs, id), arg_max(error, id) FROM teacher_calls "
            "WHERE request_hash IN (SELECT unnest(?)) GROUP BY 1",
            [hashes],
        ).fetchall()
        return {h: CachedCall(i, lab, conf, json.loads(p) if p else None, err) for h, i, lab, conf, p, err in rows}

    def record(self, *, request_hash: str, doc_id: str, run_id: int | None, model: str, prompt: Any,
               response: str | None, label: str | None, confidence: float | None, probs: dict[str, float] | None,
               tokens_in: int | None, tokens_out: int | None, cost_usd: float, latency_s: float | None,
               error: str | None, round: int | None) -> int:
        """Persist one answer (and its label, if any) the moment it arrives, in one transaction."""
        probs_json = json.dumps(probs) if probs is not None else None
        with self.store.transaction() as con:
            call_id = con.execute(
                "INSERT INTO teacher_calls (request_hash, doc_id, run_id, model, prompt, response, parsed_label, "
                "confidence, probs, tokens_in, tokens_out, cost_usd, latency_s, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [request_hash, doc_id, run_id, model, json.dumps(prompt) if prompt is not None else None, response,
                 label, confidence, probs_json, tokens_in, tokens_out, cost_usd, latency_s, error],
            ).fetchall()[0][0]
            if label is not None:
                self._add_label(con, doc_id, label, confidence, probs_json, run_id, round, call_id)
        return int(call_id)

    def reuse(self, call: CachedCall, doc_id: str, run_id: int | None, round: int | None) -> None:
        """A cache hit: the run gets the label without a new call."""
        if call.label is None:
            return
        with self.store.transaction() as con:
            self._add_label(con, doc_id, call.label, call.confidence,
                            json.dumps(call.probs) if call.probs is not None else None, run_id, round, call.id)

    @staticmethod
    def _add_label(con: Any, doc_id: str, label: str, confidence: float | None, probs: str | None,
                   run_id: int | None, round: int | None, call_id: int) -> None:
        # Idempotent per (document, run, call): a resumed run that meets the same answer adds no history.
        con.execute(
            "INSERT INTO labels (doc_id, label, source, confidence, probs, run_id, round, teacher_call_id) "
            "SELECT ?, ?, 'teacher', ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM labels WHERE doc_id = ? "
            "AND run_id IS NOT DISTINCT FROM ? AND teacher_call_id = ?)",
            [doc_id, label, confidence, probs, run_id, round, call_id, doc_id, run_id, call_id],
        )

    def add_human_label(self, doc_id: str, label: str, annotator: str | None = None) -> None:
        with self.store.transaction() as con:
            con.execute("INSERT INTO labels (doc_id, label, source, annotator) VALUES (?, ?, 'human', ?)",
                        [doc_id, label, annotator])

    def run_labels(self, run_id: int) -> dict[str, RunLabel]:
        """Labels a run trains on: the teacher labels it bought (or reused), overridden by any human label;
        plus every human-labelled document."""
        rows = self.con.execute(
            """
            WITH teacher AS (
                SELECT doc_id, arg_max(label, id) AS label, arg_max(confidence, id) AS confidence,
                       arg_max(probs, id) AS probs
                FROM labels WHERE source = 'teacher' AND run_id = ? GROUP BY doc_id
            ), human AS (
                SELECT doc_id, arg_max(label, id) AS label FROM labels WHERE source = 'human' GROUP BY doc_id
            )
            SELECT coalesce(h.doc_id, t.doc_id), coalesce(h.label, t.label),
                   CASE WHEN h.label IS NULL THEN 'teacher' ELSE 'human' END,
                   CASE WHEN h.label IS NULL THEN t.confidence ELSE 1.0 END,
                   CASE WHEN h.label IS NULL THEN t.probs END
            FROM teacher t FULL OUTER JOIN human h ON h.doc_id = t.doc_id
            """,
            [run_id],
        ).fetchall()
        return {d: RunLabel(d, lab, src, conf, json.loads(p) if p else None) for d, lab, src, conf, p in rows}

    def human_labelled(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT DISTINCT doc_id FROM labels WHERE source = 'human'").fetchall()]

    def run_spend(self, run_id: int) -> tuple[float, int]:
        usd, calls = self.con.execute(
            "SELECT coalesce(sum(cost_usd), 0), count(*) FROM teacher_calls WHERE run_id = ?", [run_id]
        ).fetchall()[0]
        return float(usd), int(calls)
