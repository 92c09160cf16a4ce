"""The teacher-call ledger (also the cache) and the labels it produces."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from kdstudio.secrets import redact
from kdstudio.store.store import Store

# Few-shot texts are read this many documents at a time (with_texts).
TEXT_CHUNK = 1000


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


@dataclass
class SpendRow:
    run_id: int | None
    model: str
    calls: int
    label_calls: int
    generate_calls: int
    errors: int
    transient: int
    tokens_in: int
    tokens_out: int
    usd: float
    mean_latency_s: float | None
    reused: int  # labels this run took from the ledger without a call
    judged: int = 0  # answers whose document has a human or gold label
    correct: int = 0  # of those, answers that agree with it
    requests: int = 0  # requests sent, every retry and re-ask included
    retries: dict[str, int] = field(default_factory=dict)  # tries that failed and were sent again, by cause
    unusable: int = 0  # answers that could not be read (bad JSON, a label outside the set): paid, asked again
    unusable_usd: float = 0.0  # what they cost

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.judged if self.judged else None


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.con = store.con

    def cached(self, hashes: list[str]) -> dict[str, CachedCall]:
        """The newest answer for each request hash that was ever answered (transient failures do not count)."""
        if not hashes:
            return {}
        rows = self.con.execute(
            "SELECT request_hash, arg_max(id, id), arg_max(parsed_label, id), arg_max(confidence, id), "
            "arg_max(probs, id), arg_max(error, id) FROM teacher_calls "
            "WHERE request_hash IN (SELECT unnest(?)) AND NOT transient GROUP BY 1",
            [hashes],
        ).fetchall()
        return {h: CachedCall(i, lab, conf, json.loads(p) if p else None, err) for h, i, lab, conf, p, err in rows}

    def record(self, *, request_hash: str, doc_id: str | None, run_id: int | None, model: str, prompt: Any,
               response: str | None, label: str | None, confidence: float | None, probs: dict[str, float] | None,
               tokens_in: int | None, tokens_out: int | None, cost_usd: float, latency_s: float | None,
               error: str | None, round: int | None, transient: bool = False, attempts: int = 1,
               purpose: str = "label", retries: dict[str, int] | None = None, unusable: int = 0,
               unusable_usd: float = 0.0) -> int:
        """Persist one answer (and its label, if any) the moment it arrives, in one transaction."""
        probs_json = json.dumps(probs) if probs is not None else None
        # A provider may echo the request's key in an answer or an error: the ledger never holds it.
        response, error = redact(response), redact(error)
        with self.store.transaction() as con:
            call_id = con.execute(
                "INSERT INTO teacher_calls (request_hash, doc_id, run_id, model, prompt, response, parsed_label, "
                "confidence, probs, tokens_in, tokens_out, cost_usd, latency_s, error, transient, attempts, "
                "purpose, retries, unusable, unusable_usd) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [request_hash, doc_id, run_id, model, json.dumps(prompt) if prompt is not None else None, response,
                 label, confidence, probs_json, tokens_in, tokens_out, cost_usd, latency_s, error, transient,
                 attempts, purpose, json.dumps(retries) if retries else None, unusable, unusable_usd],
            ).fetchall()[0][0]
            # A member's answer inside a committee or cascade is evidence, not a label: the verdict is the label.
            if label is not None and purpose != "consult":
                self._add_label(con, doc_id, label, confidence, probs_json, run_id, round, call_id, fresh=True)
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
                   run_id: int | None, round: int | None, call_id: int, fresh: bool = False) -> None:
        values = [doc_id, label, confidence, probs, run_id, round, call_id]
        if fresh:  # the call was inserted just now: no label can point at it yet, so there is nothing to look up
            con.execute("INSERT INTO labels (doc_id, label, source, confidence, probs, run_id, round, teacher_call_id) "
                        "VALUES (?, ?, 'teacher', ?, ?, ?, ?, ?)", values)
            return
        # Idempotent per (document, run, call): a resumed run that meets the same answer adds no history.
        con.execute(
            "INSERT INTO labels (doc_id, label, source, confidence, probs, run_id, round, teacher_call_id) "
            "SELECT ?, ?, 'teacher', ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM labels WHERE doc_id = ? "
            "AND run_id IS NOT DISTINCT FROM ? AND teacher_call_id = ?)",
            [*values, doc_id, run_id, call_id],
        )

    def add_human_label(self, doc_id: str, label: str, annotator: str | None = None) -> int:
        with self.store.transaction() as con:
            return int(con.execute(
                "INSERT INTO labels (doc_id, label, source, confidence, annotator, annotated_at) "
                "VALUES (?, ?, 'human', 1.0, ?, current_timestamp) RETURNING id", [doc_id, label, annotator]
            ).fetchall()[0][0])

    def remove_human_label(self, label_id: int) -> None:
        """Take back a human label given by mistake (the undo of triage); teacher labels are never removed."""
        with self.store.transaction() as con:
            con.execute("DELETE FROM labels WHERE id = ? AND source = 'human'", [label_id])

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

    def run_teacher_answers(self, run_id: int, ids: list[str]) -> dict[str, RunLabel]:
        """The teacher's own answers, with their confidence and probabilities, for each of `ids` that this run holds
        one for, whatever people said of them since (what the teacher is calibrated on)."""
        rows = self.con.execute(
            "SELECT doc_id, arg_max(label, id), arg_max(confidence, id), arg_max(probs, id) FROM labels "
            "WHERE source = 'teacher' AND run_id = ? AND doc_id IN (SELECT unnest(?)) GROUP BY doc_id",
            [run_id, ids]).fetchall()
        return {d: RunLabel(d, lab, "teacher", conf, json.loads(p) if p else None) for d, lab, conf, p in rows}

    def run_teacher_labels(self, run_id: int, ids: list[str]) -> dict[str, str]:
        """The teacher's own answer (not a person's correction) for each of `ids` that this run holds one for."""
        return dict(self.con.execute(
            "SELECT doc_id, arg_max(label, id) FROM labels WHERE source = 'teacher' AND run_id = ? "
            "AND doc_id IN (SELECT unnest(?)) GROUP BY doc_id", [run_id, ids]).fetchall())

    def current_labels(self) -> dict[str, tuple[str, str]]:
        """Every labelled document's label and its source now: a person's newest label over the teacher's newest."""
        rows = self.con.execute(
            "SELECT doc_id, arg_max(label, (source = 'human', id)), arg_max(source, (source = 'human', id)) "
            "FROM labels WHERE source IN ('human', 'teacher') GROUP BY doc_id").fetchall()
        return {d: (label, source) for d, label, source in rows}

    def human_labelled(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT DISTINCT doc_id FROM labels WHERE source = 'human'").fetchall()]

    def cached_response(self, request_hash: str) -> tuple[int, str | None] | None:
        """The newest non-transient call with this hash: (call id, raw response), e.g. to replay a generation."""
        rows = self.con.execute(
            "SELECT id, response FROM teacher_calls WHERE request_hash = ? AND NOT transient ORDER BY id DESC LIMIT 1",
            [request_hash],
        ).fetchall()
        return (int(rows[0][0]), rows[0][1]) if rows else None

    def add_synthetic(self, samples: list[tuple[str, str]], run_id: int | None, round: int | None,
                      call_id: int) -> tuple[list[str], int]:
        """Store teacher-generated samples as synthetic pool documents with their teacher label, in one
        transaction. A sample whose normalized text is already in the corpus is dropped (returned as a count);
        replaying the same call adds nothing twice."""
        if not samples:
            return [], 0
        texts = [t for t, _ in samples]
        labels = [lab for _, lab in samples]
        with self.store.transaction() as con:
            rows = con.execute(
                r"""
                WITH s AS (
                    SELECT t.text, t.label, t.pos,
                           md5(regexp_replace(lower(trim(t.text)), '\s+', ' ', 'g')) AS text_hash
                    FROM (SELECT unnest(?) AS text, unnest(?) AS label, unnest(range(len(?))) AS pos) t
                ), fresh AS (
                    SELECT * FROM s QUALIFY row_number() OVER (PARTITION BY text_hash ORDER BY pos) = 1
                )
                SELECT f.text, f.label, f.text_hash, d.id, d.source FROM fresh f
                LEFT JOIN documents d ON d.text_hash = f.text_hash ORDER BY f.pos
                """,
                [texts, labels, texts],
            ).fetchall()
            kept: list[str] = []
            dropped = len(samples) - len(rows)
            meta = json.dumps({"run_id": run_id, "round": round, "teacher_call_id": call_id})
            for text, label, text_hash, existing, source in rows:
                if existing is not None and source != "synthetic":
                    dropped += 1  # the corpus has it already: never a second copy, never a synthetic label on it
                    continue
                doc_id = existing or f"syn-{text_hash[:16]}"
                if existing is None:
                    con.execute("INSERT INTO documents (id, text, text_hash, split, source, meta) "
                                "VALUES (?, ?, ?, 'pool', 'synthetic', ?)", [doc_id, text, text_hash, meta])
                self._add_label(con, doc_id, label, None, None, run_id, round, call_id)
                kept.append(doc_id)
        return kept, dropped

    def run_synthetic(self, run_id: int, upto_round: int) -> list[str]:
        """Synthetic documents a run generated in rounds up to `upto_round`."""
        return [r[0] for r in self.con.execute(
            "SELECT DISTINCT l.doc_id FROM labels l JOIN documents d ON d.id = l.doc_id "
            "WHERE d.source = 'synthetic' AND l.run_id = ? AND l.round <= ? ORDER BY 1",
            [run_id, upto_round]).fetchall()]

    def labelled_example_labels(self) -> list[tuple[str, str]]:
        """(doc id, label) of imported pool documents with a human or a gold label, in id order: few-shot material.
        Validation and test documents are never shown to a teacher. Without their texts: a corpus with gold on every
        pool document would otherwise read the whole pool's text, past a run's memory limit, to use a few hundred."""
        return self.con.execute(
            """
            SELECT d.id, coalesce(h.label, g.label) FROM documents d
            LEFT JOIN (SELECT doc_id, arg_max(label, id) AS label FROM labels WHERE source = 'human'
                       GROUP BY doc_id) h ON h.doc_id = d.id
            LEFT JOIN gold g ON g.doc_id = d.id
            WHERE d.split = 'pool' AND d.source = 'imported' AND coalesce(h.label, g.label) IS NOT NULL
            ORDER BY d.id
            """
        ).fetchall()

    def with_texts(self, examples: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """(doc id, text, label) of the given (doc id, label) pairs, in their order. Read a chunk at a time, so that
        DuckDB holds one chunk's texts under a run's memory limit however many there are."""
        ids = [doc_id for doc_id, _ in examples]
        texts = [t for start in range(0, len(ids), TEXT_CHUNK) for t in self.store.texts(ids[start:start + TEXT_CHUNK])]
        return [(doc_id, text, label) for (doc_id, label), text in zip(examples, texts, strict=True)]

    def people_on_pool(self) -> list[tuple[str, str]]:
        """(doc id, label) of the imported pool documents people labelled (the newest label), in id order: what a
        teacher may learn from; the check sample, which grades, is not among them."""
        return self.con.execute(
            "SELECT l.doc_id, arg_max(l.label, l.id) FROM labels l JOIN documents d ON d.id = l.doc_id "
            "WHERE l.source = 'human' AND d.split = 'pool' AND d.source = 'imported' GROUP BY l.doc_id ORDER BY 1"
        ).fetchall()

    def human_examples(self) -> list[tuple[str, str]]:
        """(doc id, label) of every document with a human label (the newest one)."""
        return self.con.execute(
            "SELECT doc_id, arg_max(label, id) FROM labels WHERE source = 'human' GROUP BY doc_id ORDER BY 1"
        ).fetchall()

    def spend_report(self) -> list[SpendRow]:
        """Spend grouped by run and model, with the labels each run took from the ledger without a call (from
        another run's answers, or its own before a resume)."""
        rows = self.con.execute(
            """
            WITH human AS (
                SELECT doc_id, arg_max(label, id) AS label FROM labels WHERE source = 'human' GROUP BY doc_id
            ), truth AS (
                -- What a teacher's answer is judged against: a person's label, else the gold label.
                SELECT coalesce(h.doc_id, g.doc_id) AS doc_id, coalesce(h.label, g.label) AS label
                FROM human h FULL OUTER JOIN gold g ON g.doc_id = h.doc_id
            ), spent AS (
                SELECT c.run_id, c.model, count(*) FILTER (purpose <> 'verdict') AS calls,
                       count(*) FILTER (purpose IN ('label', 'consult')) AS label_calls,
                       count(*) FILTER (purpose = 'generate') AS gen_calls, count(error) AS errors,
                       count(*) FILTER (transient) AS transient, coalesce(sum(tokens_in), 0) AS t_in,
                       coalesce(sum(tokens_out), 0) AS t_out, coalesce(sum(cost_usd), 0) AS usd,
                       avg(latency_s) AS latency,
                       count(*) FILTER (c.parsed_label IS NOT NULL AND truth.label IS NOT NULL) AS judged,
                       count(*) FILTER (c.parsed_label = truth.label) AS correct,
                       coalesce(sum(attempts) FILTER (purpose <> 'verdict'), 0) AS requests,
                       coalesce(sum(unusable), 0) AS unusable, coalesce(sum(unusable_usd), 0) AS unusable_usd,
                       list(retries) FILTER (retries IS NOT NULL) AS retries
                FROM teacher_calls c LEFT JOIN truth ON truth.doc_id = c.doc_id GROUP BY ALL
            ), reused AS (
                SELECT l.run_id, c.model, count(*) AS n FROM labels l JOIN teacher_calls c ON c.id = l.teacher_call_id
                WHERE l.source = 'teacher' AND c.run_id IS DISTINCT FROM l.run_id GROUP BY ALL
            )
            SELECT coalesce(s.run_id, r.run_id) AS run, coalesce(s.model, r.model) AS m, coalesce(calls, 0),
                   coalesce(label_calls, 0), coalesce(gen_calls, 0), coalesce(errors, 0), coalesce(transient, 0),
                   coalesce(t_in, 0), coalesce(t_out, 0), coalesce(usd, 0), latency, coalesce(n, 0),
                   coalesce(judged, 0), coalesce(correct, 0), coalesce(requests, 0), coalesce(unusable, 0),
                   coalesce(unusable_usd, 0), retries
            FROM spent s FULL OUTER JOIN reused r ON r.run_id IS NOT DISTINCT FROM s.run_id AND r.model = s.model
            ORDER BY run NULLS FIRST, m
            """
        ).fetchall()
        return [SpendRow(run, model, calls, label_calls, gen_calls, errors, transient, int(t_in), int(t_out),
                         float(usd), latency, reused, judged, correct, int(requests), _summed(retries),
                         int(unusable), float(unusable_usd))
                for run, model, calls, label_calls, gen_calls, errors, transient, t_in, t_out, usd, latency, reused,
                judged, correct, requests, unusable, unusable_usd, retries in rows]

    def run_val_labels(self, run_id: int) -> int:
        """Validation documents this run holds a teacher label for (bought, or reused from the ledger)."""
        return int(self.con.execute(
            "SELECT count(DISTINCT l.doc_id) FROM labels l JOIN documents d ON d.id = l.doc_id "
            "WHERE l.run_id = ? AND l.source = 'teacher' AND d.split = 'val'", [run_id]).fetchall()[0][0])

    def run_spend(self, run_id: int) -> tuple[float, int]:
        usd, calls = self.con.execute(
            "SELECT coalesce(sum(cost_usd), 0), count(*) FILTER (purpose <> 'verdict') FROM teacher_calls "
            "WHERE run_id = ?", [run_id]
        ).fetchall()[0]
        return float(usd), int(calls)


def _summed(retries: list[str] | None) -> dict[str, int]:
    """Retries by cause over a group's calls (each call's retries are a JSON object)."""
    total: dict[str, int] = {}
    for one in retries or []:
        for cause, n in json.loads(one).items():
            total[cause] = total.get(cause, 0) + int(n)
    return dict(sorted(total.items()))
