"""A round of the live review loop (`kdstudio review serve`): a student trained on every label the project holds,
people's over the teacher's, and the pool documents its selector wants people to label next. It buys nothing; what
people label comes back through the review tool."""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kdstudio.check import check_truth, grade_run_student
from kdstudio.errors import KdError
from kdstudio.interfaces import ReviewItem, Student
from kdstudio.loop import DistillConfig
from kdstudio.plugins import Plugins
from kdstudio.pool_view import PoolView
from kdstudio.store import Ledger, RunLog, Store
from kdstudio.store.gold_labels import GoldLabels
from kdstudio.vector_index import VectorIndex


class Project(Protocol):
    """What a live round needs of the project (kdstudio.project.Project, which sits above this module)."""

    store: Store
    directory: Path

    @property
    def plugins(self) -> Plugins: ...

    @property
    def labels(self) -> list[str]: ...

    @property
    def vector_key(self) -> str: ...

    def distill_config(self, flags: dict[str, Any] | None = None) -> DistillConfig: ...


LIVE_TEACHER = "people"  # what a live run's record names as its teacher: its labels come from people


@dataclass
class LiveRound:
    """What a live round made: the kept student (its model version names it in the review tool) and the next
    documents for people, each with the new student's label and its probability."""

    run_id: int
    round: int
    student_id: int
    model_version: str
    n_train: int
    by_source: dict[str, int]
    picked: list[ReviewItem]
    check: dict[str, Any] | None
    student: Student


def model_version(student_id: int, kind: str) -> str:
    return f"kdstudio-student-{student_id}-{kind}"


def live_round(project: Project, run_id: int | None, batch: int, in_review: set[str], backend: str) -> LiveRound:
    """Train the project's student on every current label and pick `batch` pool documents with its selector (none of
    them labelled by a person or already in the review project). The first round opens a run; later rounds add to it,
    and each keeps only its newest student."""
    config = project.distill_config({})
    student_cls = project.plugins.get("student", config.student).cls
    if student_cls.input != "embeddings":
        raise KdError(f"the live loop retrains as people label, too often for the {config.student} student",
                      "set `student` in kdstudio.toml's [distill] to an embeddings student (logreg, svm, ...)")
    store, labels = project.store, project.labels
    index = VectorIndex.from_store(store, project.vector_key)
    index.mark_pool()
    current = Ledger(store).current_labels()
    in_pool = store.in_pool(list(current))
    ids = sorted(d for d in index.known(current) if d in in_pool)
    if len({current[d][0] for d in ids}) < 2:
        raise KdError("the live loop needs labelled pool documents of two labels at least to train a student",
                      "label a few tasks in the review tool, or distill from a teacher first")
    position = {x: i for i, x in enumerate(labels)}
    student = student_cls(**config.student_options)
    student.fit(index.vectors(ids), np.array([position[current[d][0]] for d in ids]), len(labels))
    runs = RunLog(store)
    if run_id is None:
        run_id = runs.create({**asdict(config), "teacher": LIVE_TEACHER, "vectors": project.vector_key,
                              "live": {"backend": backend, "batch": batch}}, simulated=False)
    round_no = len(runs.rounds(run_id))
    items, scored, selector = _pick(project, index, student, ids, current, in_review, batch, config, round_no)
    by_source = {s: sum(current[d][1] == s for d in ids) for s in ("human", "teacher")}
    check = _graded(project, run_id, student, index)
    runs.save_selection(run_id, round_no, selector, items, scored, {})
    runs.finish_round(run_id, round_no, selected=items, n_labels=len(ids), cost_usd=0.0,
                      metrics={"trained_on": by_source, **({"check": check} if check else {})}, timings={},
                      selector_state={})
    student_id = _keep(project, runs, run_id, round_no, student, config.student, config.student_options,
                       {"n_train": len(ids), "trained_on": {"by_source": by_source},
                        **({"check": check} if check else {})})
    runs.set_status(run_id, "finished", best_round=round_no,
                    stop_reason=f"live review in {backend}: round {round_no} trained on {len(ids)} labels")
    version = model_version(student_id, config.student)
    probs = student.predict_proba(index.vectors([x["id"] for x in items])) if items else np.zeros((0, len(labels)))
    texts = store.texts([x["id"] for x in items])
    picked = [ReviewItem(x["id"], text, labels[int(p.argmax())], float(p.max()), version)
              for x, text, p in zip(items, texts, probs, strict=True)]
    return LiveRound(run_id, round_no, student_id, version, len(ids), by_source, picked, check, student)


def _pick(project: Project, index: VectorIndex, student: Student, labelled: list[str],
          current: dict[str, tuple[str, str]], in_review: set[str], batch: int, config: Any, round_no: int
          ) -> tuple[list[dict[str, Any]], int, str]:
    """The selector's choice among pool documents that no person labelled and the review project does not hold."""
    taken = {d for d, (_, source) in current.items() if source == "human"} | in_review
    free = index.free_rows(taken)
    if batch <= 0 or not len(free):
        return [], 0, config.selector
    teacher = {d: (current[d][0], None) for d in labelled if current[d][1] == "teacher"}
    pool = PoolView(free, index.vectors_at, index.vectors_at, labelled, student, project.labels, round_no,
                    np.random.default_rng([config.seed, round_no, 3571]), None, teacher,
                    vectors_of=index.vectors, ids_of=index.ids_at,
                    excluded=index.rows(list(index.known(taken))))
    selector = project.plugins.get("selector", config.selector).cls(**config.selector_options)
    choice = selector.select(pool, batch)
    picked = index.ids_at(free[np.asarray(choice.positions, dtype=np.int64)])
    items = [{"id": d, "score": None if s is None or math.isnan(s) else float(s)}
             for d, s in zip(picked, choice.scores, strict=True)]
    return items, max(choice.scored, pool.scored), selector.name


def _graded(project: Project, run_id: int, student: Student, index: VectorIndex) -> dict[str, Any] | None:
    """The student on the check sample, by people's labels (with its interval), where people have labelled it."""
    truth = check_truth(project.store, GoldLabels(project.store))
    graded = grade_run_student(project.labels, truth, Ledger(project.store), run_id, list(truth.unlabelled),
                               lambda ids: student.predict_proba(index.vectors(ids)))
    return graded.as_dict() if graded is not None else None


def _keep(project: Project, runs: RunLog, run_id: int, round_no: int, student: Student, kind: str,
          options: dict[str, Any], summary: dict[str, Any]) -> int:
    """The round's student replaces the run's previous one: the newest is the one people's labels shaped most."""
    relative = Path("students") / f"run-{run_id}" / f"round-{round_no}"
    student.save(project.directory / relative)
    for old_id, _, old_round, _, path, _ in runs.students(run_id):
        runs.delete_student(old_id)
        if old_round != round_no:
            shutil.rmtree(project.directory / path, ignore_errors=True)
    return runs.save_student(run_id, round_no, kind, options, summary, relative.as_posix())
