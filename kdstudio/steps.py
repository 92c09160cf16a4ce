"""The steps of a round (select, teach, generate, train, evaluate, keep), each a function of the run's fixed
context and its state. Every step persists what it did before the next begins (see kdstudio.loop)."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio import method_auto, teacher_check
from kdstudio.autopilot import GainRule, forecast
from kdstudio.check import CheckTruth, baseline, grade_run_student, guessing
from kdstudio.errors import KdError, RunFailed, TeacherFailing, TeacherGuessing
from kdstudio.estimates import Estimate, wilson
from kdstudio.evaluation import evaluate
from kdstudio.events import EventFn, Labelled, RoundDone, SamplesGenerated, TeacherChecked, Teaching
from kdstudio.interfaces import (
    Doc,
    FreeLabeller,
    LabelDoubt,
    Selection,
    Selector,
    Student,
    TeachContext,
    Teacher,
)
from kdstudio.pgkd import generation_request
from kdstudio.pool_view import PoolView
from kdstudio.run_state import RoundReport, RunState, Trained, best_key, count_patience, judge_best
from kdstudio.scale import PoolScorer
from kdstudio.store import Ledger, RunLog, Store
from kdstudio.store.gold_labels import GoldLabels
from kdstudio.teaching import Generated, TeacherRunner, TeachOutcome
from kdstudio.training import train
from kdstudio.uncertainty import uncertainty
from kdstudio.vector_index import VectorIndex


@dataclass(frozen=True)
class Components:
    teacher: Teacher
    selector: Selector
    seed_selector: Selector
    student_cls: type[Student]
    doubt: LabelDoubt | None = None
    free_labeller: FreeLabeller | None = None


GUESSING_REFUSAL_FIX = (f"{teacher_check.GUESSING_ADVICE}; or, to buy from it anyway, --accept-guessing-teacher "
                        "(accept_guessing_teacher = true)")


@dataclass
class RunContext:
    """What stays the same for the whole run: its settings, its parts and the data it reads."""

    run_id: int
    config: Any  # DistillConfig
    labels: list[str]
    parts: Components
    store: Store
    ledger: Ledger
    runs: RunLog
    index: VectorIndex
    runner: TeacherRunner
    students_dir: Path
    val_ids: list[str]
    test_ids: list[str]
    gold: GoldLabels
    n_pool: int  # imported pool documents: generated ones are never selected, they come with a label
    emit: EventFn
    should_stop: Callable[[], bool]
    encode: Callable[[list[str]], np.ndarray] | None = None
    embedding_model: str = ""
    scorer: PoolScorer | None = None
    free_ids: list[str] = field(default_factory=list)  # the pool sample a free labeller reads, fixed for the run
    check: CheckTruth = field(default_factory=lambda: CheckTruth({}, 0, 0))  # the check sample's reference labels
    borrowable: list[str] = field(default_factory=list)  # unchecked documents PPI borrows the student's answers on
    label_index: dict[str, int] = field(init=False)
    _pool_member: dict[str, bool] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.label_index = {label: i for i, label in enumerate(self.labels)}

    def features(self, ids: list[str]) -> Any:
        """What the student reads for these documents: their vectors, or their texts."""
        return self.index.vectors(ids) if self.parts.student_cls.input == "embeddings" else self.store.texts(ids)

    def features_at(self, rows: np.ndarray) -> Any:
        """The same for the documents at index `rows` (pool positions)."""
        if self.parts.student_cls.input == "embeddings":
            return self.index.vectors_at(rows)
        return self.store.texts(self.index.ids_at(rows))

    def in_pool(self, ids: Iterable[str]) -> set[str]:
        """Those of `ids` that are imported pool documents (remembered: no document changes split during a run). The
        index's pool mask answers for documents it holds; only the others cost a scan of the corpus."""
        ids = list(ids)
        unknown = [d for d in ids if d not in self._pool_member]
        held = sorted(self.index.known(unknown))
        self._pool_member.update(zip(held, self.index.pool[self.index.rows(held)].tolist(), strict=True))
        others = [d for d in unknown if d not in self._pool_member]
        if others:
            found = self.store.in_pool(others)
            self._pool_member.update((d, d in found) for d in others)
        return {d for d in ids if self._pool_member[d]}

    def resume_fix(self) -> str:
        return (f"fix the teacher (key, model, server), then continue with `kdstudio distill --resume --run "
                f"{self.run_id}`; the answers already paid for are reused")


@dataclass
class Batch:
    """A round's selection: the documents with their selection scores, and how many candidates were scored."""

    items: list[dict[str, Any]]
    scored: int
    timings: dict[str, float] = field(default_factory=dict)
    wanted: int = 0  # documents the round asked its selector for
    free: int = 0  # pool documents it could choose from

    @property
    def ids(self) -> list[str]:
        return [s["id"] for s in self.items]


def slice_ids(ids: list[str], limit: int | None, rng: np.random.Generator) -> list[str]:
    if limit is None or len(ids) <= limit:
        return ids
    return sorted(rng.choice(ids, size=limit, replace=False).tolist())


# -- select ----------------------------------------------------------------------------------------------------


def chooser_of(ctx: RunContext, state: RunState) -> Selector:
    """The seed selector chooses the first batch, and with method auto each batch after a student that the trusted
    labels cannot tell from a guess (kdstudio.method_auto.selects_as_first); the run's selector the rest."""
    if state.round_no == 0 or (state.reports and method_auto.selects_as_first(state.reports[-1].metrics)):
        return ctx.parts.seed_selector
    return ctx.parts.selector


def select(ctx: RunContext, state: RunState) -> Batch:
    """The round's documents: a saved selection that was never finished is taken as it was; otherwise the seed
    selector or the selector chooses (`chooser_of`), and the choice is saved before any teacher call."""
    if state.pending is not None:
        pending, state.pending = state.pending, None
        return Batch(pending.selected, pending.scored or 0, wanted=len(pending.selected))
    started = time.perf_counter()
    config, round_no = ctx.config, state.round_no
    taken = state.chosen | set(ctx.ledger.human_labelled())
    free = ctx.index.free_rows(taken)
    want = config.seed_size if round_no == 0 else config.batch
    if config.budget_labels is not None:
        want = min(want, config.budget_labels - len(state.selected))
    answers = {}
    if state.trained:
        taught = {d: lab for d, lab in state.trained.labelled.items() if lab.source == "teacher"}
        answers = {d: (taught[d].label, taught[d].confidence) for d in sorted(ctx.index.known(taught))}
    pool = PoolView(free, ctx.features_at, ctx.index.vectors_at, [s["id"] for s in state.selected],
                    state.trained.student if state.trained else None, ctx.labels, round_no,
                    np.random.default_rng([config.seed, round_no]), ctx.scorer, answers,
                    vectors_of=ctx.index.vectors, ids_of=ctx.index.ids_at,
                    excluded=ctx.index.rows(list(ctx.index.known(taken))))
    chooser = chooser_of(ctx, state)
    # A pure PGKD run (--batch 0) buys no new documents after the seed: its data is generated.
    choice: Selection = chooser.select(pool, want) if want > 0 and len(free) else Selection([], [])
    picked = ctx.index.ids_at(free[np.asarray(choice.positions, dtype=np.int64)])
    items = [{"id": d, "score": None if s is None or math.isnan(s) else float(s)}
             for d, s in zip(picked, choice.scores, strict=True)]
    scored = max(choice.scored, pool.scored)
    if items or not want:  # an empty choice ends the run (see nothing_to_ask): there is no round to save
        ctx.runs.save_selection(ctx.run_id, round_no, chooser.name, items, scored, ctx.parts.selector.state_dict())
    return Batch(items, scored, {"select_s": time.perf_counter() - started}, want, len(free))


def nothing_to_ask(ctx: RunContext, state: RunState, batch: Batch) -> str:
    """Why a round that could select nothing ends the run: whatever the budget says, there is nothing to buy."""
    if not batch.free:
        return (f"the pool is exhausted: {len(state.selected)} bought, nothing left to ask (the rest of the pool is "
                "labelled by people or already bought)")
    return f"the {chooser_of(ctx, state).name} selector chose nothing from the {batch.free} pool documents left"


def keep_answered(batch: Batch, outcome: TeachOutcome) -> None:
    """Narrow the round to the documents the teacher answered (a label, or a failure that was paid for)."""
    answered = outcome.labelled.keys() | outcome.failed.keys()
    batch.items = [item for item in batch.items if item["id"] in answered]


# -- teach and generate ----------------------------------------------------------------------------------------


def teach(ctx: RunContext, state: RunState, batch: Batch) -> TeachOutcome:
    """The teacher's labels for the batch, each recorded as it arrives; a teacher that fails on and on stops the
    run as failed."""
    started = time.perf_counter()
    ids = batch.ids
    difficulty = None
    if state.trained is not None and ctx.parts.teacher.wants_difficulty:
        probs = state.trained.student.predict_proba(ctx.features(ids))
        difficulty = dict(zip(ids, uncertainty(probs, "entropy"), strict=True))
    docs = [Doc(d, t) for d, t in zip(ids, ctx.store.texts(ids), strict=True)]
    if ctx.parts.teacher.simulated:
        ctx.gold.prefetch(ids)
    ctx.emit(Teaching(state.round_no, len(docs)))
    outcome = ctx.runner.label(docs, round=state.round_no, difficulty=difficulty,
                               on_label=lambda a, r=state.round_no: ctx.emit(Labelled(r, a.doc_id)))
    batch.timings["teach_s"] = time.perf_counter() - started
    if outcome.failing:
        raise TeacherFailing(outcome.failing, ctx.resume_fix())
    return outcome


def check_teacher(ctx: RunContext) -> None:
    """A teacher asked for free (local, not simulated) is checked before anything is bought: its agreement with the
    project's human and gold labels, and signs that it is guessing, said as an event."""
    teacher = ctx.parts.teacher
    if not teacher.local or teacher.simulated:
        return
    rng = np.random.default_rng([ctx.config.seed, 3571])
    human = dict(ctx.ledger.human_examples())
    ids = set(ctx.index.pool_sample(teacher_check.SAMPLE, rng))
    ids |= set(slice_ids(sorted(human), teacher_check.SAMPLE, rng))
    ids |= set(ctx.gold.sample(teacher_check.SAMPLE, rng))
    chosen = sorted(ids)
    ctx.gold.prefetch(chosen)
    docs = [Doc(d, t) for d, t in zip(chosen, ctx.store.texts(chosen), strict=True)]
    verdict = teacher_check.check(teacher, ctx.runner.context, ctx.labels, docs, ctx.in_pool(chosen),
                                  {d: x for d, x in human.items() if d in ids},
                                  {d: ctx.gold[d] for d in chosen if d in ctx.gold})
    ctx.emit(TeacherChecked(teacher.model_name, tuple(verdict.found), tuple(verdict.warnings)))
    if verdict.guessing and not ctx.config.accept_guessing_teacher:
        raise TeacherGuessing(verdict.guessing, GUESSING_REFUSAL_FIX)


def label_validation(ctx: RunContext) -> None:
    """The validation set, and the checked documents of the check sample (where people or gold grade the teacher),
    are labelled by the teacher once (cached, so a resume pays nothing again)."""
    ids = ctx.val_ids + sorted(ctx.check.labels)
    if not ids:
        return
    checked = ctx.runner.label([Doc(d, t) for d, t in zip(ids, ctx.store.texts(ids), strict=True)], round=None)
    if checked.failing:
        raise TeacherFailing(checked.failing, ctx.resume_fix())


def refuse_a_guessing_teacher(ctx: RunContext) -> None:
    """Before a fresh run buys its first training label: a teacher that the checked sample cannot tell from guessing
    (its 95% interval reaches chance or the commonest label) is refused, unless the user accepts it."""
    judged = ctx.ledger.run_teacher_labels(ctx.run_id, sorted(ctx.check.labels))
    if len(judged) < teacher_check.GUESS_EVIDENCE or ctx.config.accept_guessing_teacher:
        return
    accuracy = wilson(sum(judged[d] == ctx.check.labels[d] for d in judged), len(judged), ctx.check.kind)
    base = baseline(ctx.labels, [ctx.check.labels[d] for d in judged])
    if guessing(accuracy, base):
        raise TeacherGuessing(guessing_line(ctx.parts.teacher.model_name, accuracy, base), GUESSING_REFUSAL_FIX)


def guessing_line(teacher: str, accuracy: Estimate, base: float) -> str:
    return (f"the teacher {teacher} agrees with {accuracy.text()} of the checked labels, and a guess gets {base:.3f}: "
            "it cannot be told from guessing, so no training label was bought from it")


def generate(ctx: RunContext, state: RunState, outcome: TeachOutcome, batch: Batch) -> int:
    """PGKD: the last student's errors and validation report go to the teacher, which writes new samples; they are
    stored as synthetic pool documents (never val or test), embedded, and trained on from now on. Returns how many
    were kept; a budget that refuses the call ends the run after this round."""
    config = ctx.config
    if not (config.generate and state.trained is not None and state.reports):
        return 0
    started = time.perf_counter()
    trained, last = state.trained, state.reports[-1]
    y = np.array([ctx.label_index[trained.labelled[d].label] for d in trained.train_ids])
    request = generation_request(trained.student.predict_proba(ctx.features(trained.train_ids)), y,
                                 ctx.store.texts(trained.train_ids), ctx.labels,
                                 last.metrics.get("val", {}).get("per_class"), config.pgkd,
                                 np.random.default_rng([config.seed, state.round_no, 31]))
    made = ctx.runner.generate(request, round=state.round_no)
    _embed_new(ctx, made)
    ctx.emit(SamplesGenerated(state.round_no, len(made.doc_ids), made.duplicates, made.rejected, made.cached,
                              made.error))
    batch.timings["generate_s"] = time.perf_counter() - started
    if made.refused:
        outcome.stopped = outcome.stopped or made.error
    return len(made.doc_ids)


def _embed_new(ctx: RunContext, made: Generated) -> None:
    fresh = ctx.index.missing(made.doc_ids)
    if not fresh:
        return
    if ctx.encode is None:
        raise KdError("generated samples need embedding, and this run has no encoder")
    vectors = ctx.encode(ctx.store.texts(fresh))
    ctx.store.save_embeddings(ctx.embedding_model, fresh, vectors)
    ctx.index.append(ctx.store.vector_rows(ctx.embedding_model, fresh))


# -- train, evaluate, keep -------------------------------------------------------------------------------------


def train_or_fail(ctx: RunContext, state: RunState, outcome: TeachOutcome, batch: Batch) -> Trained:
    started = time.perf_counter()
    trained = train(ctx, state.selected, state.round_no, [r.metrics for r in state.reports])
    if trained is None:
        if outcome.stopped:  # a budget ran out before a single training label was bought
            raise RunFailed(f"{outcome.stopped} before any training label was bought",
                            "give a larger budget (validation labels are paid from it too; see --val-size) "
                            f"and resume: `kdstudio distill --resume --run {ctx.run_id} --budget-usd ...`")
        raise TeacherFailing("the teacher returned no usable label for any document of this run", ctx.resume_fix())
    batch.timings["train_s"] = time.perf_counter() - started
    return trained


def evaluate_student(ctx: RunContext, trained: Trained) -> dict[str, Any]:
    """Validation metrics against the teacher's labels, test metrics against gold, and the teacher's own accuracy
    where gold is known."""
    student, labelled = trained.student, trained.labelled
    metrics: dict[str, Any] = {}
    val = [d for d in ctx.val_ids if d in labelled]
    if val:
        y = np.array([ctx.label_index[labelled[d].label] for d in val])
        metrics["val"] = evaluate(y, student.predict_proba(ctx.features(val)), ctx.labels)
    if ctx.test_ids:
        y = np.array([ctx.label_index[ctx.gold[d]] for d in ctx.test_ids])
        metrics["test"] = evaluate(y, student.predict_proba(ctx.features(ctx.test_ids)), ctx.labels)
    judged = [d for d, lab in labelled.items() if lab.source == "teacher" and d in ctx.gold]
    if judged:
        metrics["teacher_accuracy"] = float(np.mean([labelled[d].label == ctx.gold[d] for d in judged]))
        metrics["teacher_judged"] = len(judged)
    # On the check sample: PPI borrows the teacher's belief in the student's answers on the validation documents,
    # and the student's confidence on other unchecked ones, all drawn from the same pool and never trained on.
    graded = grade_run_student(ctx.labels, ctx.check, ctx.ledger, ctx.run_id, val + ctx.borrowable,
                               lambda ids: student.predict_proba(ctx.features(ids)), seed=ctx.config.seed)
    if graded is not None:
        metrics["check"] = graded.as_dict()
    return metrics


def keep(ctx: RunContext, state: RunState, trained: Trained, outcome: TeachOutcome, batch: Batch,
         generated: int) -> RunState:
    """Evaluate the round's student, keep it on disk if it is the run's best so far, and save the round."""
    started = time.perf_counter()
    metrics = evaluate_student(ctx, trained)
    if trained.doubted:
        metrics["doubted"] = trained.doubted
    if trained.free_note:
        metrics["free_labels"], metrics["free_added"] = trained.free_note, trained.free_added
    if trained.auto is not None:
        metrics["auto"] = trained.auto
    batch.timings["eval_s"] = time.perf_counter() - started
    loss = best_key(metrics, len(trained.train_ids))
    verdict = judge_best(state, metrics, len(trained.train_ids))
    metrics["kept_by"] = verdict.rule
    is_best = verdict.replaces
    if is_best:
        state.best_loss, state.best_round = loss, state.round_no
        keep_student(ctx, state.round_no, trained, metrics)
    count_patience(state, metrics)
    usd, calls = ctx.ledger.run_spend(ctx.run_id)
    if ctx.config.stop_when_gain_below and "val" in metrics:
        metrics["forecast"] = _forecast(ctx, state, len(trained.train_ids), usd, metrics["val"]["accuracy"])
    report = RoundReport(state.round_no, len(state.selected), len(trained.train_ids), len(outcome.failed), usd,
                         calls, batch.scored, metrics, batch.timings, is_best, generated)
    ctx.runs.finish_round(ctx.run_id, state.round_no, selected=batch.items, n_labels=len(trained.train_ids),
                          cost_usd=usd, metrics={**metrics, "best": is_best, "n_selected": len(state.selected),
                                   "failed": len(outcome.failed), "calls": calls, "generated": generated},
                          timings=batch.timings, selector_state=ctx.parts.selector.state_dict())
    state.reports.append(report)
    state.trained = trained
    ctx.emit(RoundDone(report))
    return state


def _forecast(ctx: RunContext, state: RunState, n_labels: int, usd: float, accuracy: float) -> dict[str, Any] | None:
    """The autopilot's forecast after this round, from every round's validation accuracy so far."""
    done = [r for r in state.reports if "val" in r.metrics]
    return forecast(GainRule.parse(ctx.config.stop_when_gain_below), [r.n_labels for r in done] + [n_labels],
                    [r.cost_usd for r in done] + [usd], [r.metrics["val"]["accuracy"] for r in done] + [accuracy])


def keep_student(ctx: RunContext, round_no: int, trained: Trained, metrics: dict[str, Any]) -> None:
    """Only the best student of a run is kept on disk; a better one replaces it."""
    drop_students(ctx.runs, ctx.students_dir.parent, ctx.run_id)
    relative = Path(ctx.students_dir.name) / f"run-{ctx.run_id}" / f"round-{round_no}"
    trained.student.save(ctx.students_dir.parent / relative)
    summary: dict[str, Any] = {
        split: {m: metrics[split][m] for m in ("accuracy", "macro_f1", "log_loss") if m in metrics[split]}
        for split in ("val", "test") if split in metrics}
    if "check" in metrics:
        summary["check"] = metrics["check"]
    if trained.auto is not None:
        summary["auto"] = {k: trained.auto[k] for k in ("name", "truth", "n", "accuracy")}
    summary["n_train"], summary["trained_on"] = len(trained.train_ids), trained.composition
    # Stored relative to the project, so that the project can be opened from anywhere (and moved).
    ctx.runs.save_student(ctx.run_id, round_no, ctx.config.student, trained.options, summary, relative.as_posix())


def drop_students(runs: RunLog, project_dir: Path, run_id: int) -> None:
    for student_id, _, _, _, path, _ in runs.students(run_id):
        shutil.rmtree(resolve_artifact(project_dir, path), ignore_errors=True)
        runs.delete_student(student_id)


def resolve_artifact(project_dir: Path, stored: str) -> Path:
    """A kept student's folder from the path stored for it: relative to the project (older versions stored it
    absolute, or relative to the directory distill was started in)."""
    path = Path(stored)
    if path.is_absolute():
        return path
    inside = project_dir / path
    return inside if inside.exists() or not path.exists() else path


# -- the teacher's context ---------------------------------------------------------------------------------------


def teach_context(ledger: Ledger, teacher: Teacher, seed: int, labels: list[str], descriptions: dict[str, str],
                  gold: Mapping[str, str], **embedding: Any) -> TeachContext:
    """What the teacher is told besides the documents; few-shot examples are drawn once per run, balanced over the
    classes, so that the same run always builds the same prompts (and cache keys)."""
    chosen: list[tuple[str, str]] = []
    wanted = teacher.examples_wanted
    if wanted and teacher.examples_per_document:
        chosen = ledger.labelled_example_labels()
    elif wanted:
        rows = ledger.labelled_example_labels()
        humans = dict(ledger.human_examples())
        order = np.random.default_rng([seed, 104729]).permutation(len(rows))
        # Human labels first, then round-robin over the classes.
        ranked = sorted(order.tolist(), key=lambda i: rows[i][0] not in humans)
        per_class: dict[str, list[int]] = {}
        for i in ranked:
            per_class.setdefault(rows[i][1], []).append(i)
        queues = [per_class[x] for x in labels if x in per_class]
        while len(chosen) < wanted and any(queues):
            for q in queues:
                if q and len(chosen) < wanted:
                    chosen.append(rows[q.pop(0)])
    examples = ledger.with_texts(chosen) if chosen else []
    return TeachContext(labels, descriptions, gold if teacher.simulated else {}, examples=examples,
                        people=ledger.people_on_pool(), **embedding)
