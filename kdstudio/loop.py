"""The distillation loop: seed -> (select -> teach -> train -> evaluate) per round -> stop.

Every step is persisted before the next begins: a round's selection is saved before any teacher call, each teacher
answer the moment it arrives, and the round's metrics once its student is evaluated. A killed or cancelled run
resumes at the first unsaved step and never pays for a teacher call twice (the ledger is also the cache).
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.errors import KdError, RunFailed, TeacherFailing
from kdstudio.evaluation import evaluate
from kdstudio.interfaces import (
    CostEstimate,
    Doc,
    Engine,
    GenerationRequest,
    LabelledSet,
    Selection,
    Selector,
    Student,
    TeachContext,
    Teacher,
)
from kdstudio.pgkd import PgkdSettings, generation_request
from kdstudio.plugins import Plugins
from kdstudio.scale import PoolScorer, features_table
from kdstudio.store import Ledger, RunLog, Store
from kdstudio.teaching import Budget, Generated, TeacherRunner
from kdstudio.uncertainty import uncertainty

EventFn = Callable[[str, dict[str, Any]], None]
TARGET = re.compile(r"^(val|test)\.(accuracy|macro_f1|weighted_f1)>=([0-9.]+)$")
# Runs this process is executing. A run marked 'running' in the database that is not here was stopped without a
# chance to say so (kill -9, a crash, a power cut): while a run executes, no other process can open the project.
ACTIVE_RUNS: set[int] = set()


def resolve_artifact(project_dir: Path, stored: str) -> Path:
    """A kept student's folder from the path stored for it: relative to the project (older versions stored it
    absolute, or relative to the directory distill was started in)."""
    path = Path(stored)
    if path.is_absolute():
        return path
    inside = project_dir / path
    return inside if inside.exists() or not path.exists() else path


@dataclass
class DistillConfig:
    teacher: str = "zeroshot"
    teacher_options: dict[str, Any] = field(default_factory=dict)
    selector: str = "margin"
    selector_options: dict[str, Any] = field(default_factory=dict)
    student: str = "logreg"
    student_options: dict[str, Any] = field(default_factory=dict)
    seed_selector: str = "random"
    seed_size: int = 20
    batch: int = 20
    budget_labels: int | None = 200
    budget_calls: int | None = None
    budget_usd: float | None = None
    target: str | None = None  # e.g. "val.accuracy>=0.95"
    patience: int | None = None  # rounds without a better validation loss
    max_rounds: int | None = None
    # Validation documents the teacher labels once per run; "auto" is half the label budget, from 20 to 200.
    val_limit: int | str = "auto"
    test_limit: int | None = None
    soft_labels: bool = False
    seed: int = 0
    generate: str | None = None  # "pgkd": the teacher also writes new samples each round
    generate_samples: int = 32
    generate_shots: int = 16
    generate_report: bool = True  # PGKD ablation: without the validation report
    generate_hard_negatives: bool = True  # PGKD ablation: without hard negatives

    def val_size(self) -> int | None:
        """How many validation documents the run buys labels for (None: every one there is)."""
        if self.val_limit != "auto":
            return None if self.val_limit is None else int(self.val_limit)
        if self.budget_labels is None:
            return 200
        return min(200, max(20, self.budget_labels // 2))

    def validate(self) -> None:
        if self.val_limit != "auto" and not (self.val_limit is None or (isinstance(self.val_limit, int)
                                                                         and self.val_limit >= 0)):
            raise KdError(f"--val-size {self.val_limit!r} is not a number of documents", "give 0 or more, or auto")
        if self.target and not TARGET.match(self.target):
            raise KdError(f"--target {self.target!r} is not understood",
                          "write it as val.accuracy>=0.95 (val or test; accuracy, macro_f1 or weighted_f1)")
        if self.seed_size < 1 or self.batch < 0 or (self.batch == 0 and not self.generate):
            raise KdError("--seed-size must be at least 1, and --batch too unless the teacher generates samples")
        if self.generate not in (None, "pgkd"):
            raise KdError(f"--generate {self.generate!r} is not known", "the one generation method is pgkd")
        if self.generate and self.generate_samples < 1:
            raise KdError("--generate-samples must be at least 1")
        if self.batch == 0 and not (self.max_rounds or self.patience or self.target or self.budget_usd is not None
                                    or self.budget_calls is not None):
            raise KdError("with --batch 0 the label budget never runs out", "give --max-rounds, --patience, --target "
                          "or a call or USD budget")

    @property
    def pgkd(self) -> PgkdSettings:
        return PgkdSettings(self.generate_samples, self.generate_shots, self.generate_report,
                            self.generate_hard_negatives)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RoundReport:
    round: int
    n_selected: int
    n_labels: int
    failed: int
    cost_usd: float
    calls: int
    scored: int
    metrics: dict[str, Any]
    timings: dict[str, float]
    best: bool
    generated: int = 0


@dataclass
class Plan:
    """What a run would cost, from its prompts alone: nothing is sent."""

    teacher: str
    n_train: int
    n_val: int
    labels: CostEstimate
    generation: CostEstimate | None

    @property
    def usd(self) -> float:
        return self.labels.usd + (self.generation.usd if self.generation else 0.0)


@dataclass
class RunResult:
    run_id: int
    status: str
    stop_reason: str
    best_round: int | None
    student_id: int | None
    simulated: bool
    rounds: list[RoundReport]
    # What the run paid for, all in: its teacher calls (one per answer, however many tries), their cost, and the
    # labels they bought for training and for validation.
    calls: int = 0
    cost_usd: float = 0.0
    train_labels: int = 0
    val_labels: int = 0


def why_stop(config: DistillConfig, reports: list[RoundReport], n_selected: int, budget: Budget, since_best: int,
         pool_left: int) -> str:
    """Why the run should stop before its next round, or "" to go on."""
    if config.budget_labels is not None and n_selected >= config.budget_labels:
        return f"label budget reached ({n_selected}/{config.budget_labels})"
    if reason := budget.exhausted():
        return reason
    if pool_left <= 0:
        return "the pool is exhausted"
    if config.max_rounds is not None and len(reports) >= config.max_rounds:
        return f"{config.max_rounds} rounds done"
    if config.patience is not None and since_best >= config.patience:
        return f"no better validation loss for {config.patience} rounds (early stop)"
    if config.target and reports:
        split, metric, threshold = TARGET.match(config.target).groups()  # type: ignore[union-attr]
        value = reports[-1].metrics.get(split, {}).get(metric)
        if value is not None and value >= float(threshold):
            return f"target reached: {split}.{metric} = {value:.4f} >= {threshold}"
    return ""


class _Pool:
    """The selector's view of the unlabelled pool (positions index `ids`). With a `scorer` (an engine), scoring runs
    on the engine's workers: the whole pool as one shard job, anything smaller as a stream of chunks."""

    def __init__(self, ids: np.ndarray, features: Callable[[list[str]], Any],
                 vectors: Callable[[list[str]], np.ndarray], labelled: list[str], student: Student | None,
                 labels: list[str], round: int, rng: np.random.Generator, scorer: PoolScorer | None = None) -> None:
        self.ids = ids
        self.n_pool = len(ids)
        self.n_classes = len(labels)
        self.labels = labels
        self.round = round
        self.rng = rng
        self.has_student = student is not None
        self.scored = 0
        self._features = features
        self._vectors = vectors
        self._labelled = labelled
        self._student = student
        self._scorer = scorer

    def _require_student(self) -> Student:
        if self._student is None:
            raise KdError("no student to score with yet")
        return self._student

    def score(self, positions: np.ndarray) -> np.ndarray:
        student = self._require_student()
        positions = np.asarray(positions)
        if self._scorer is not None and len(positions) == self.n_pool and self.n_pool:
            self.scored += len(positions)
            return self._scorer.score_pool(student, self.round, self.ids[positions])
        chunks = (positions[start:start + 65536] for start in range(0, len(positions), 65536))  # bounded memory
        out = [probs for _, probs in self.score_stream(chunks)]
        return np.concatenate(out) if out else np.zeros((0, self.n_classes))

    def score_stream(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        student = self._require_student()
        if self._scorer is None:
            for positions in chunks:
                self.scored += len(positions)
                yield positions, student.predict_proba(self._features(self.ids[positions].tolist()))
            return
        scorer = self._scorer

        def with_features() -> Iterator[tuple[np.ndarray, Any]]:
            for positions in chunks:
                self.scored += len(positions)  # counted when sent: work ahead that is never used is paid too
                ids = self.ids[positions].tolist()
                yield positions, features_table(ids, self._features(ids), student.input)

        yield from scorer.score_stream(student, self.round, with_features())

    def pool_vectors(self) -> np.ndarray:
        return self._vectors(self.ids.tolist())

    def labelled_vectors(self) -> np.ndarray:
        return self._vectors(self._labelled)


class Distiller:
    def __init__(self, store: Store, labels: list[str], descriptions: dict[str, str], embedding_model: str,
                 plugins: Plugins, students_dir: Path, on_event: EventFn | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 encode: Callable[[list[str]], np.ndarray] | None = None, engine: Engine | None = None,
                 work_dir: Path | None = None) -> None:
        self.store = store
        self.engine = engine
        self.work_dir = work_dir
        self.encode = encode
        self.labels = labels
        self.descriptions = descriptions
        self.embedding_model = embedding_model
        self.plugins = plugins
        self.students_dir = students_dir
        self.on_event = on_event or (lambda kind, payload: None)
        self.should_stop = should_stop or (lambda: False)
        self.label_index = {label: i for i, label in enumerate(labels)}
        self.ledger = Ledger(store)
        self.runs = RunLog(store)

    # -- set-up ----------------------------------------------------------------------------------------

    def _components(self, config: DistillConfig) -> tuple[Teacher, Selector, Selector, type[Student]]:
        teacher = self.plugins.get("teacher", config.teacher).cls(**config.teacher_options)
        selector = self.plugins.get("selector", config.selector).cls(**config.selector_options)
        seed_selector = self.plugins.get("selector", config.seed_selector).cls()
        student_cls = self.plugins.get("student", config.student).cls
        student_cls(**config.student_options)  # options are checked before anything is spent
        return teacher, selector, seed_selector, student_cls

    def _load_vectors(self) -> None:
        ids, matrix = self.store.embedding_matrix(self.embedding_model)
        self.row_of = {doc_id: i for i, doc_id in enumerate(ids)}
        self.matrix = matrix
        # Vectors of samples generated during this process; kept apart so that the big matrix is never copied.
        self.generated_vectors: dict[str, np.ndarray] = {}
        missing = [d for d in self.store.ids_in_split("pool") if d not in self.row_of]
        if missing:
            raise KdError(f"{len(missing)} pool documents have no {self.embedding_model} vector",
                          "run `kdstudio embed` first")

    def _vectors(self, ids: list[str]) -> np.ndarray:
        if not ids:
            return np.zeros((0, self.matrix.shape[1]), dtype=self.matrix.dtype)
        extra = self.generated_vectors
        out = self.matrix[[0 if d in extra else self.row_of[d] for d in ids]]
        if extra:
            for i, doc_id in enumerate(ids):
                if doc_id in extra:
                    out[i] = extra[doc_id]
        return out

    def _features(self, student_cls: type[Student]) -> Callable[[list[str]], Any]:
        return self._vectors if student_cls.input == "embeddings" else self.store.texts

    # -- the run ---------------------------------------------------------------------------------------

    def start(self, config: DistillConfig) -> RunResult:
        config.validate()
        teacher, *_ = self._components(config)
        self._check_teacher(config, teacher)
        run_id = self.runs.create(asdict(config), simulated=teacher.simulated)
        return self._run(run_id, config)

    def _check_teacher(self, config: DistillConfig, teacher: Teacher) -> None:
        """What can be known before a run spends anything."""
        teacher.check_ready()
        if config.generate and not teacher.can_generate:
            raise KdError(f"--generate {config.generate} needs a teacher that writes samples; {teacher.name} does "
                          "not", "use --teacher llm")
        if config.budget_usd is not None:
            estimate = teacher.estimate([], TeachContext(self.labels, self.descriptions), 0)
            if not estimate.priced:
                raise KdError(f"a USD budget cannot be enforced: the price of {teacher.model_name} is "
                              f"{estimate.price_source}", "give --price-in and --price-out (USD per million tokens)")

    def plan(self, config: DistillConfig, sample: int = 50) -> Plan:
        """Estimate a run's teacher cost from a sample of its prompts, spending nothing."""
        config.validate()
        teacher, *_ = self._components(config)
        pool = self.store.ids_in_split("pool", source="imported")
        n_train = len(pool) if config.budget_labels is None else min(config.budget_labels, len(pool))
        n_val = len(self._slice(self.store.ids_in_split("val"), config.val_size(), np.random.default_rng(0)))
        rng = np.random.default_rng(config.seed)
        ids = sorted(rng.choice(pool, size=min(sample, len(pool)), replace=False).tolist()) if pool else []
        docs = [Doc(d, t) for d, t in zip(ids, self.store.texts(ids), strict=True)]
        context = self.context(teacher, config, {})
        labels = teacher.estimate(docs, context, n_train + n_val)
        generation = None
        if config.generate and docs:
            rounds = 1 + math.ceil(max(0, n_train - config.seed_size) / max(1, config.batch))
            shots = [(d.text, self.labels[i % len(self.labels)]) for i, d in enumerate(docs[:config.generate_shots])]
            wrong = [(t, lab, lab) for t, lab in shots]
            request = GenerationRequest(config.generate_samples, shots, shots, wrong,
                                        wrong if config.generate_hard_negatives else [],
                                        {x: {"precision": 0.5, "recall": 0.5, "f1": 0.5} for x in self.labels}
                                        if config.generate_report else None)
            generation = teacher.estimate_generation(request, context, max(0, rounds - 1))
        return Plan(teacher.model_name, n_train, n_val, labels, generation)

    def context(self, teacher: Teacher, config: DistillConfig, gold: dict[str, str]) -> TeachContext:
        """What the teacher is told besides the documents; few-shot examples are drawn once per run, balanced
        over the classes, so that the same run always builds the same prompts (and cache keys)."""
        examples: list[tuple[str, str, str]] = []
        wanted = teacher.examples_wanted
        if wanted:
            rows = self.ledger.labelled_examples()
            humans = dict(self.ledger.human_examples())
            rng = np.random.default_rng([config.seed, 104729])
            order = rng.permutation(len(rows))
            # Human labels first, then round-robin over the classes.
            ranked = sorted(order.tolist(), key=lambda i: rows[i][0] not in humans)
            per_class: dict[str, list[int]] = {}
            for i in ranked:
                per_class.setdefault(rows[i][2], []).append(i)
            queues = [per_class[x] for x in self.labels if x in per_class]
            while len(examples) < wanted and any(queues):
                for q in queues:
                    if q and len(examples) < wanted:
                        examples.append(rows[q.pop(0)])
        return TeachContext(self.labels, self.descriptions, gold if teacher.simulated else {}, examples=examples,
                            vectors=self._vectors, encode=self.encode, embedding_model=self.embedding_model)

    def resume(self, run_id: int, overrides: dict[str, Any] | None = None) -> RunResult:
        run = self.runs.get(run_id)
        if run is None:
            raise KdError(f"there is no run {run_id}", "see `kdstudio runs`")
        config = DistillConfig.from_dict({**run.config, **(overrides or {})})
        config.validate()
        self._check_teacher(config, self._components(config)[0])
        self.runs.set_status(run_id, "running")
        return self._run(run_id, config)

    def _run(self, run_id: int, config: DistillConfig) -> RunResult:
        self._scorer: PoolScorer | None = None
        ACTIVE_RUNS.add(run_id)
        try:
            return self._loop(run_id, config)
        except RunFailed as exc:
            # A student trained on (nearly) nothing must not be shipped as this run's result.
            for student_id, *_, path, _ in self.runs.students(run_id):
                shutil.rmtree(self._artifact(path), ignore_errors=True)
                self.runs.delete_student(student_id)
            self.runs.set_status(run_id, "failed", stop_reason=exc.message)
            raise
        except BaseException as exc:
            status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
            self.runs.set_status(run_id, status, stop_reason=f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            ACTIVE_RUNS.discard(run_id)
            if self._scorer is not None:
                self._scorer.close()

    def _loop(self, run_id: int, config: DistillConfig) -> RunResult:
        teacher, selector, seed_selector, student_cls = self._components(config)
        self._load_vectors()
        features = self._features(student_cls)
        if self.engine is not None:
            self._scorer = PoolScorer(self.engine, self.store, self.embedding_model, student_cls.input,
                                      (self.work_dir or self.students_dir.parent / "work") / f"run-{run_id}")
        gold = self.store.gold()
        # Synthetic (generated) documents are never selected for labelling: they come with their label.
        pool_all = self.store.ids_in_split("pool", source="imported")
        pool_set = set(pool_all)
        setup_rng = np.random.default_rng([config.seed, 7919])
        val_ids = self._slice(self.store.ids_in_split("val"), config.val_size(), setup_rng)
        test_ids = self._slice([d for d in self.store.ids_in_split("test") if d in gold], config.test_limit, setup_rng)
        context = self.context(teacher, config, gold)
        usd, calls = self.ledger.run_spend(run_id)
        budget = Budget(config.budget_calls, config.budget_usd, calls, usd)
        runner = TeacherRunner(self.ledger, teacher, context, run_id, budget, self.should_stop)
        n_train = min(len(pool_all), config.budget_labels) if config.budget_labels is not None else len(pool_all)
        self.on_event("run", {"run_id": run_id, "simulated": teacher.simulated, "teacher": teacher.model_name,
                              "config": asdict(config), "train_labels": n_train, "val_labels": len(val_ids)})

        # The validation set is labelled by the teacher once (cached, so a resume pays nothing again).
        if val_ids:
            checked = runner.label([Doc(d, t) for d, t in zip(val_ids, self.store.texts(val_ids), strict=True)],
                                   round=None)
            if checked.failing:
                raise TeacherFailing(checked.failing, self._resume_fix(run_id))

        history = self.runs.rounds(run_id)
        reports = [self._report_from_row(row) for row in history if row.phase == "done"]
        # A round saved as 'selected' but never finished is redone below with its own batch.
        selected: list[dict[str, Any]] = [item for row in history if row.phase == "done" for item in row.selected]
        best_loss = min((r.metrics.get("val", {}).get("log_loss", math.inf) for r in reports), default=math.inf)
        best_round = ([r.round for r in reports if r.best] or [None])[-1]
        since_best = 0
        for r in reports:
            since_best = 0 if r.best else since_best + 1
        student: Student | None = None
        trained = None
        if selected:
            # The next selection needs the latest student, which is rebuilt exactly from the saved labels. The
            # selector's saved state is put back after it, so that resuming does not update it twice.
            trained = self._train(run_id, selected, pool_set, reports[-1].round, config, student_cls, features,
                                  selector)
            student = trained[0] if trained else None
        if history:
            selector.load_state_dict(history[-1].selector_state)
        pending = history[-1] if history and history[-1].phase == "selected" else None
        stop_reason = ""
        round_no = history[-1].round + (0 if pending else 1) if history else 0

        while True:
            timings: dict[str, float] = {}
            if pending is None:
                chosen = {s["id"] for s in selected}
                stop_reason = "cancelled" if self.should_stop() else why_stop(
                    config, reports, len(selected), budget, since_best, len(pool_set) - len(chosen))
                if stop_reason:
                    break
                started = time.perf_counter()
                taken = chosen | set(self.ledger.human_labelled())
                free = np.array([d for d in pool_all if d not in taken], dtype=object)
                want = config.seed_size if round_no == 0 else config.batch
                if config.budget_labels is not None:
                    want = min(want, config.budget_labels - len(selected))
                rng = np.random.default_rng([config.seed, round_no])
                pool = _Pool(free, features, self._vectors, [s["id"] for s in selected], student, self.labels,
                             round_no, rng, self._scorer)
                chooser = seed_selector if round_no == 0 else selector
                # A pure PGKD run (--batch 0) buys no new documents after the seed: its data is generated.
                choice: Selection = chooser.select(pool, want) if want > 0 else Selection([], [])
                batch = [{"id": str(free[p]), "score": None if s is None or math.isnan(s) else float(s)}
                         for p, s in zip(choice.positions, choice.scores, strict=True)]
                scored = max(choice.scored, pool.scored)
                self.runs.save_selection(run_id, round_no, chooser.name, batch, scored, selector.state_dict())
                timings["select_s"] = time.perf_counter() - started
            else:
                batch, scored = pending.selected, pending.scored or 0
                pending = None
            selected.extend(batch)

            started = time.perf_counter()
            ids = [s["id"] for s in batch]
            if student is not None and teacher.wants_difficulty:
                context.difficulty = dict(zip(ids, uncertainty(student.predict_proba(features(ids)), "entropy"),
                                              strict=True))
            docs = [Doc(d, t) for d, t in zip(ids, self.store.texts(ids), strict=True)]
            self.on_event("teaching", {"round": round_no, "n": len(docs)})
            outcome = runner.label(docs, round=round_no,
                                   on_label=lambda a, r=round_no: self.on_event("label", {"round": r,
                                                                                         "doc_id": a.doc_id}))
            timings["teach_s"] = time.perf_counter() - started
            if outcome.failing:
                raise TeacherFailing(outcome.failing, self._resume_fix(run_id))
            if outcome.stopped == "cancelled" or self.should_stop():
                self.runs.set_status(run_id, "cancelled", best_round=best_round, stop_reason="cancelled")
                return self._result(run_id, "cancelled", "cancelled", best_round, teacher, reports)

            generated = 0
            if config.generate and trained is not None and reports:
                started = time.perf_counter()
                made = self._generate(runner, trained, features, reports[-1], config, round_no)
                generated = len(made.doc_ids)
                timings["generate_s"] = time.perf_counter() - started
                if made.refused:
                    outcome.stopped = outcome.stopped or made.error

            started = time.perf_counter()
            trained = self._train(run_id, selected, pool_set, round_no, config, student_cls, features, selector)
            if trained is None:
                if outcome.stopped:  # a budget ran out before a single training label was bought
                    raise RunFailed(f"{outcome.stopped} before any training label was bought",
                                    "give a larger budget (validation labels are paid from it too; see --val-size) "
                                    f"and resume: `kdstudio distill --resume --run {run_id} --budget-usd ...`")
                raise TeacherFailing("the teacher returned no usable label for any document of this run",
                                     self._resume_fix(run_id))
            student, train_ids, labelled = trained
            timings["train_s"] = time.perf_counter() - started

            started = time.perf_counter()
            metrics = self._evaluate(student, features, labelled, val_ids, test_ids, gold)
            timings["eval_s"] = time.perf_counter() - started
            loss = metrics.get("val", {}).get("log_loss", math.inf)
            is_best = loss < best_loss or best_round is None or (not val_ids)
            if is_best:
                best_loss, best_round, since_best = loss, round_no, 0
                self._keep_student(run_id, round_no, config, student, metrics, len(train_ids))
            else:
                since_best += 1
            usd, calls = self.ledger.run_spend(run_id)
            report = RoundReport(round_no, len(selected), len(train_ids), len(outcome.failed), usd, calls, scored,
                                 metrics, timings, is_best, generated)
            self.runs.finish_round(run_id, round_no, n_labels=len(train_ids), cost_usd=usd,
                                   metrics={**metrics, "best": is_best, "n_selected": len(selected),
                                            "failed": len(outcome.failed), "calls": calls, "generated": generated},
                                   timings=timings, selector_state=selector.state_dict())
            reports.append(report)
            self.on_event("round", {"report": report})
            if outcome.stopped:
                stop_reason = outcome.stopped
                break
            round_no += 1

        status = "cancelled" if stop_reason == "cancelled" else "finished"
        self.runs.set_status(run_id, status, best_round=best_round, stop_reason=stop_reason)
        result = self._result(run_id, status, stop_reason, best_round, teacher, reports)
        self.on_event("done", {"result": result})
        return result

    # -- helpers ---------------------------------------------------------------------------------------

    def _train(self, run_id: int, selected: list[dict[str, Any]], pool_set: set[str], upto_round: int,
               config: DistillConfig,
               student_cls: type[Student], features: Callable[[list[str]], Any],
               selector: Selector) -> tuple[Student, list[str], dict[str, Any]] | None:
        """Fit a fresh student on the run's labels for the selected documents, plus human-labelled pool ones and
        the samples the run generated up to `upto_round`."""
        labelled = self.ledger.run_labels(run_id)
        chosen = {s["id"] for s in selected}
        synthetic = set(self.ledger.run_synthetic(run_id, upto_round))
        scores = {s["id"]: s["score"] for s in selected}
        # Sorted: the SQL returns rows in no fixed order, and the same data in another order can train a
        # (very slightly) different student, so that a resumed run would drift from an uninterrupted one.
        train_ids = sorted(d for d in labelled if d in synthetic or (
            d in pool_set and (d in chosen or labelled[d].source == "human")))
        if not train_ids:
            return None
        k = len(self.labels)
        y = np.array([self.label_index[labelled[d].label] for d in train_ids])
        train_set = LabelledSet(
            y=y,
            confidence=np.array([np.nan if labelled[d].confidence is None else labelled[d].confidence
                                 for d in train_ids], dtype=float),
            selection_score=np.array([np.nan if scores.get(d) is None else scores[d] for d in train_ids], dtype=float),
            human=np.array([labelled[d].source == "human" for d in train_ids]),
        )
        soft = None
        if config.soft_labels:
            soft = np.eye(k)[y]
            for i, d in enumerate(train_ids):
                probs = labelled[d].probs
                if probs and labelled[d].source == "teacher":
                    row = np.array([probs.get(label, 0.0) for label in self.labels])
                    if row.sum() > 0:
                        soft[i] = row / row.sum()
        weights = selector.training_weights(train_set)
        student = student_cls(**config.student_options)
        student.fit(features(train_ids), y, k, sample_weight=weights, soft_labels=soft)
        return student, train_ids, labelled



    def _generate(self, runner: TeacherRunner, trained: tuple[Student, list[str], dict[str, Any]],
                  features: Callable[[list[str]], Any], last: RoundReport, config: DistillConfig,
                  round_no: int) -> Generated:
        """PGKD: the last student's errors and validation report go to the teacher, which writes new samples;
        they are stored as synthetic pool documents (never val or test), embedded, and trained on from now on."""
        student, train_ids, labelled = trained
        y = np.array([self.label_index[labelled[d].label] for d in train_ids])
        request = generation_request(student.predict_proba(features(train_ids)), y, self.store.texts(train_ids),
                                     self.labels, last.metrics.get("val", {}).get("per_class"), config.pgkd,
                                     np.random.default_rng([config.seed, round_no, 31]))
        made = runner.generate(request, round=round_no)
        fresh = [d for d in made.doc_ids if d not in self.row_of and d not in self.generated_vectors]
        if fresh:
            vectors = (self.encode or self._no_encoder)(self.store.texts(fresh))
            self.store.save_embeddings(self.embedding_model, fresh, vectors)
            self.generated_vectors.update(zip(fresh, vectors.astype(self.matrix.dtype), strict=True))
        self.on_event("generated", {"round": round_no, "kept": len(made.doc_ids), "duplicates": made.duplicates,
                                    "rejected": made.rejected, "cached": made.cached, "error": made.error})
        return made

    @staticmethod
    def _no_encoder(texts: list[str]) -> np.ndarray:
        raise KdError("generated samples need embedding, and this distiller has no encoder")

    @staticmethod
    def _slice(ids: list[str], limit: int | None, rng: np.random.Generator) -> list[str]:
        if limit is None or len(ids) <= limit:
            return ids
        return sorted(rng.choice(ids, size=limit, replace=False).tolist())

    def _evaluate(self, student: Student, features: Callable[[list[str]], Any], labelled: dict[str, Any],
                  val_ids: list[str], test_ids: list[str], gold: dict[str, str]) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        val = [d for d in val_ids if d in labelled]
        if val:
            y = np.array([self.label_index[labelled[d].label] for d in val])
            metrics["val"] = evaluate(y, student.predict_proba(features(val)), self.labels)
        if test_ids:
            y = np.array([self.label_index[gold[d]] for d in test_ids])
            metrics["test"] = evaluate(y, student.predict_proba(features(test_ids)), self.labels)
        judged = [d for d, lab in labelled.items() if lab.source == "teacher" and d in gold]
        if judged:
            metrics["teacher_accuracy"] = float(np.mean([labelled[d].label == gold[d] for d in judged]))
            metrics["teacher_judged"] = len(judged)
        return metrics

    def _keep_student(self, run_id: int, round_no: int, config: DistillConfig, student: Student,
                      metrics: dict[str, Any], n_train: int) -> None:
        """Only the best student of a run is kept on disk; a better one replaces it."""
        for student_id, _, _, _, path, _ in self.runs.students(run_id):
            shutil.rmtree(self._artifact(path), ignore_errors=True)
            self.runs.delete_student(student_id)
        relative = Path(self.students_dir.name) / f"run-{run_id}" / f"round-{round_no}"
        student.save(self.students_dir.parent / relative)
        summary: dict[str, Any] = {
            split: {m: metrics[split][m] for m in ("accuracy", "macro_f1", "log_loss") if m in metrics[split]}
            for split in ("val", "test") if split in metrics}
        summary["n_train"] = n_train
        # Stored relative to the project, so that the project can be opened from anywhere (and moved).
        self.runs.save_student(run_id, round_no, config.student, config.student_options, summary, relative.as_posix())

    def _artifact(self, stored: str) -> Path:
        return resolve_artifact(self.students_dir.parent, stored)

    @staticmethod
    def _resume_fix(run_id: int) -> str:
        return (f"fix the teacher (key, model, server), then continue with `kdstudio distill --resume --run {run_id}`"
                "; the answers already paid for are reused")

    @staticmethod
    def _report_from_row(row: Any) -> RoundReport:
        m = row.metrics
        return RoundReport(row.round, m.get("n_selected", 0), row.n_labels or 0, m.get("failed", 0),
                           row.cost_usd or 0.0, m.get("calls", 0), row.scored or 0, m, row.timings,
                           bool(m.get("best")), m.get("generated", 0))

    def _result(self, run_id: int, status: str, reason: str, best_round: int | None, teacher: Teacher,
                reports: list[RoundReport]) -> RunResult:
        kept = self.runs.students(run_id)
        usd, calls = self.ledger.run_spend(run_id)
        return RunResult(run_id, status, reason, best_round, kept[-1][0] if kept else None, teacher.simulated,
                         reports, calls, usd, reports[-1].n_labels if reports else 0,
                         self.ledger.run_val_labels(run_id))
