"""The distillation loop: seed -> (select -> teach -> train -> evaluate) per round -> stop.

Every step is persisted before the next begins: a round's selection is saved before any teacher call, each teacher
answer the moment it arrives, and the round's metrics once its student is evaluated. A killed or cancelled run
resumes at the first unsaved step and never pays for a teacher call twice (the ledger is also the cache).

This module keeps the configuration, the stop rule and the driver; the state a run carries is
kdstudio.run_state, and the steps of a round are kdstudio.steps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio import autopilot, steps
from kdstudio.autopilot import GainRule
from kdstudio.check import BORROW_LIMIT, BORROW_LIMIT_TEXTS, PPI_MIN_CHECKED, CheckTruth, check_truth
from kdstudio.errors import ConfigError, KdError, RunFailed
from kdstudio.events import EventFn, RunDone, RunStarted
from kdstudio.interfaces import CostEstimate, Doc, Engine, GenerationRequest, SampleWriter, TeachContext, Teacher
from kdstudio.money import usd
from kdstudio.pgkd import PgkdSettings
from kdstudio.plugins import Plugins
from kdstudio.run_state import RoundReport, RunResult, RunState, restore
from kdstudio.scale import PoolScorer
from kdstudio.settings import check_table, setting, settings_of
from kdstudio.steps import Components, RunContext, resolve_artifact
from kdstudio.store import Ledger, RunLog, Store
from kdstudio.store.gold_labels import GoldLabels
from kdstudio.teaching import Budget, TeacherRunner
from kdstudio.threads import sized_pools
from kdstudio.training import replay
from kdstudio.vector_index import VectorIndex

__all__ = ["ACTIVE_RUNS", "TEACHER_SHORTCUTS", "DistillConfig", "Distiller", "Plan", "RoundReport", "RunResult",
           "Shortcut", "resolve_artifact", "resume_config", "why_stop"]

METHODS = ("fixed", "auto")
# The label doubt and the free labeller that method auto tries when the run names none.
AUTO_DOUBT, AUTO_FREE_LABELS = "cleanlab", "self-train"
# `val.accuracy:0.95` means the same as `val.accuracy>=0.95` and needs no quotes in a shell (unquoted, `>` would
# send the output to a file named `=0.95`).
TARGET = re.compile(r"^(val|test)\.(accuracy|macro_f1|weighted_f1)(?:>=|:)([0-9]*\.?[0-9]+)$")
# Runs this process is executing. A run marked 'running' in the database that is not here was stopped without a
# chance to say so (kill -9, a crash, a power cut): while a run executes, no other process can open the project.
ACTIVE_RUNS: set[int] = set()


@dataclass
class DistillConfig:
    """A run's settings, each declared once (kdstudio.settings): the command line's flags, the Distill tab's form, the
    check of kdstudio.toml's [distill] table and the JSON Schema of a run's settings are derived from here."""

    teacher: str = setting("zeroshot", "who labels: a registered teacher (see `kdstudio plugins`)", plugin="teacher",
                           form="teacher")
    teacher_options: dict[str, Any] = setting({}, "the teacher's options (see `kdstudio plugins`)",
                                              flag="--teacher-option", metavar="KEY=VALUE")
    selector: str = setting("margin", "which pool documents are worth a teacher call", plugin="selector",
                            form="selector")
    selector_options: dict[str, Any] = setting({}, "the selector's options", flag="--selector-option",
                                               metavar="KEY=VALUE")
    student: str = setting("logreg", "the small classifier that learns from the labels", plugin="student",
                           form="student")
    student_options: dict[str, Any] = setting({}, "the student's options", flag="--student-option",
                                              metavar="KEY=VALUE")
    seed_selector: str = setting("random", "how the first batch is chosen (with method auto, also each batch after a "
                                 "student the trusted labels cannot tell from a guess, from ten labels a class)",
                                 plugin="selector")
    seed_size: int = setting(20, "documents in the first batch", low=1)
    batch: int = setting(20, "documents labelled per round", low=0, form="per round")
    budget_labels: int | None = setting(200, "training documents to buy at most", low=0, form="labels to buy")
    budget_calls: int | None = setting(None, "teacher calls at most (validation labels included)", low=0)
    budget_usd: float | None = setting(None, "US dollars at most", low=0.0, form="max USD")
    # e.g. "val.accuracy:0.95" (or "val.accuracy>=0.95")
    target: str | None = setting(None, "stop once reached, e.g. val.accuracy:0.95 (or, quoted, "
                                       "'val.accuracy>=0.95')")
    patience: int | None = setting(None, "stop after this many rounds without a better validation loss", low=1)
    max_rounds: int | None = setting(None, "stop after this many rounds", low=1)
    # "auto" is half the label budget, from 20 to 200.
    val_limit: int | str = setting("auto", "validation documents the teacher labels once per run (paid like "
                                           "training labels); auto is half the label budget, 20 to 200", low=0,
                                   literals=("auto",), flag="--val-size", aliases=("--val-limit",))
    test_limit: int | None = setting(None, "gold test documents evaluated each round (default: all)", low=0)
    soft_labels: bool = setting(False, "train on the teacher's probabilities, not just its label")
    fused_labels: bool = setting(False, "train on fused labels: the teacher's probabilities, calibrated on the "
                                        "checked or gold labels, times what a student that never saw the label "
                                        "believes (an embeddings student)")
    # Training that doubts its labels: a label-doubt plugin (e.g. cleanlab) judges each teacher label out of fold,
    # and doubted labels are held out or down-weighted (its `action` option).
    doubt: str | None = setting(None, "doubt the teacher's labels with this label-doubt plugin (cleanlab or "
                                      "confidence): labels that look wrong are held out or down-weighted",
                                plugin="doubt", metavar="NAME")
    doubt_options: dict[str, Any] = setting({}, "the label doubt's options, e.g. action=weight (down-weight instead "
                                                "of hold out)", flag="--doubt-option", metavar="KEY=VALUE")
    # The unlabelled pool teaches too: a free labeller (self-train, spread) adds down-weighted pseudo-labels to each
    # round's training set; they are never stored or counted as labels.
    free_labels: str | None = setting(None, "let the unlabelled pool teach too: self-train (the student's confident "
                                            "predictions) or spread (label spreading over a neighbour graph); "
                                            "pseudo-labels are down-weighted, never stored or paid for",
                                      plugin="free_labels", metavar="NAME")
    free_labels_options: dict[str, Any] = setting({}, "the free labeller's options, e.g. precision=0.9",
                                                  flag="--free-labels-option", metavar="KEY=VALUE")
    # The budget autopilot, e.g. "0.005/100": stop once the forecast validation-accuracy gain of the next 100 labels
    # falls below 0.005 ("0.01/usd": per US dollar).
    stop_when_gain_below: str | None = setting(None, "budget autopilot: stop once the forecast validation-accuracy "
                                                     "gain of the next labels falls below this, e.g. 0.005/100 (per "
                                                     "100 labels) or 0.01/usd (per dollar)", metavar="GAIN/PER")
    # "auto" chooses how each round trains (regularization, doubt, self-training, soft or fused labels) on the labels
    # the run trusts most; it never changes what is bought (kdstudio.method_auto).
    method: str = setting("fixed", "fixed: train as these settings say; auto: each round's training (the student's "
                                   "regularization, doubt, self-training, soft or fused labels) chosen on the check "
                                   "sample's labels and gold validation labels, else on the teacher's validation "
                                   "labels; the next batch chosen as the first where the former cannot tell the "
                                   "student from a guess after ten labels a class",
                          choices=METHODS, form="method")
    accept_guessing_teacher: bool = setting(False, "buy labels even from a teacher that the check sample or gold "
                                                   "labels cannot tell from guessing")
    seed: int = setting(0, "the seed of every random choice of the run")
    generate: str | None = setting(None, "with pgkd, the teacher also writes new training samples aimed at the "
                                         "student's weaknesses, each round", metavar="pgkd")
    generate_samples: int = setting(32, "PGKD: new samples per round", low=1)
    generate_shots: int = setting(16, "PGKD: few-shot, correct, misclassified and hard-negative samples shown, "
                                      "each", low=0)
    generate_report: bool = setting(True, "PGKD: show the validation report in the prompt (--no-report: the "
                                          "ablation without it)", flag="--no-report", negated=True)
    generate_hard_negatives: bool = setting(True, "PGKD: show hard negatives (--no-hard-negatives: the ablation "
                                                  "without them)", flag="--no-hard-negatives", negated=True)

    def val_size(self) -> int | None:
        """How many validation documents the run buys labels for (None: every one there is)."""
        if self.val_limit != "auto":
            return None if self.val_limit is None else int(self.val_limit)
        if self.budget_labels is None:
            return 200
        return min(200, max(20, self.budget_labels // 2))

    def validate(self) -> None:
        """Each setting by its declaration (type, bounds), then the rules between settings."""
        for name, declared in settings_of(DistillConfig).items():
            setattr(self, name, declared.check(getattr(self, name)))
        if self.target and not TARGET.match(self.target):
            raise KdError(f"target {self.target!r} is not understood",
                          "write it as val.accuracy:0.95 or 'val.accuracy>=0.95' (val or test; accuracy, macro_f1 "
                          "or weighted_f1)")
        if self.batch == 0 and not self.generate:
            raise KdError("batch must be at least 1 unless the teacher generates samples (generate = pgkd)")
        if self.generate not in (None, "pgkd"):
            raise KdError(f"generate {self.generate!r} is not known", "the one generation method is pgkd")
        if self.stop_when_gain_below:
            GainRule.parse(self.stop_when_gain_below)
        if self.batch == 0 and not (self.max_rounds or self.patience or self.target or self.budget_usd is not None
                                    or self.budget_calls is not None):
            raise KdError("with batch 0 the label budget never runs out", "give max_rounds, patience, target or a "
                          "call or USD budget")

    @property
    def pgkd(self) -> PgkdSettings:
        return PgkdSettings(self.generate_samples, self.generate_shots, self.generate_report,
                            self.generate_hard_negatives)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def layered(cls, project: dict[str, Any], flags: dict[str, Any]) -> DistillConfig:
        """The one order of precedence: these defaults < the project's [distill] table < flags given now."""
        return cls(**{**check_table(cls, project, "[distill] in kdstudio.toml"), **flags})


@dataclass(frozen=True)
class Shortcut:
    """A flag (and a box of the Distill tab's form) that sets one teacher option: the LLM teacher's everyday ones."""

    flag: str
    option: str
    help: str
    form: str | None = None


TEACHER_SHORTCUTS = (
    Shortcut("--model", "model", "LLM teacher: a litellm model string, e.g. openai/gpt-4o-mini (key from the "
                                 "provider's environment variable); picks the llm teacher unless --teacher is given",
             "LLM model (teacher llm)"),
    Shortcut("--api-base", "api_base", "LLM teacher: base URL of an OpenAI-compatible server (Ollama, vLLM, "
                                       "llama.cpp)", "API base (teacher llm)"),
    Shortcut("--price-in", "price_in", "LLM teacher: USD per million prompt tokens (for unpriced models)"),
    Shortcut("--price-out", "price_out", "LLM teacher: USD per million completion tokens"),
    Shortcut("--shots", "few_shot", "LLM teacher: show before each document the K labelled documents most like it "
                                    "(people's labels, and gold where the corpus has it; never the teacher's)"),
)


# Settings a resumed run takes from the command line: how much more it may buy, and how to reach its teacher (a key
# rotated, a server moved). Any other setting would make the rounds already done and the rounds to come two
# different runs, so a resume that changes one is refused.
APPLIED_ON_RESUME = ("budget_labels", "budget_calls", "budget_usd", "target", "patience", "max_rounds",
                     "stop_when_gain_below", "teacher_options")


def resume_config(run_id: int, saved: dict[str, Any], flags: dict[str, Any]) -> tuple[DistillConfig, list[str]]:
    """The config a resumed run goes on with, and a line per setting the flags changed. Teacher options given again
    are merged into the run's own (a moved server, a rotated key's variable): the run keeps its model and prices
    unless they are given again, and a different model is refused, since its answers would be another teacher's."""
    if "teacher_options" in flags:
        before = saved.get("teacher_options") or {}
        merged = {**before, **flags["teacher_options"]}
        if str(merged.get("model", "")) != str(before.get("model", "")):
            raise KdError(f"run {run_id} was taught by model {before.get('model')!r}; a resume cannot switch to "
                          f"{merged.get('model')!r}", "start a new run with that model (it is another teacher)")
        flags = {**flags, "teacher_options": merged}
    changed = {k: v for k, v in flags.items() if saved.get(k) != v}
    refused = [k for k in changed if k not in APPLIED_ON_RESUME]
    if refused:
        shown = "; ".join(f"{k} {changed[k]!r} (the run has {saved.get(k)!r})" for k in refused)
        raise KdError(f"a resume goes on with run {run_id}'s own settings, and these differ: {shown}",
                      "drop them to resume, or start a new run with them")
    applied = [f"{k.replace('_', '-')}: {saved.get(k)!r} -> {v!r}" for k, v in changed.items()]
    return DistillConfig.from_dict({**saved, **changed}), applied


@dataclass
class Plan:
    """What a run would cost, from its prompts alone: nothing is sent."""

    teacher: str
    n_train: int
    n_val: int
    labels: CostEstimate
    generation: CostEstimate | None
    not_ready: str | None = None  # why the teacher could not start (no key, unknown model), checked without a call
    access: str = ""  # how the teacher is reached (where its key comes from), when it is ready
    n_check: int = 0  # checked documents of the check sample the teacher is asked about, with the validation labels
    prompt: list[dict[str, str]] = field(default_factory=list)  # the messages one sampled document would be sent

    @property
    def usd(self) -> float:
        """The estimate."""
        return self.labels.usd + (self.generation.usd if self.generation else 0.0)

    @property
    def bound_usd(self) -> float:
        """At most this: the worst case the USD gate reserves."""
        return self.labels.bound_usd + (self.generation.bound_usd if self.generation else 0.0)


def why_stop(config: DistillConfig, reports: list[RoundReport], n_selected: int, budget: Budget,
             since_lower_loss: int, pool_left: int) -> str:
    """Why the run should stop before its next round, or "" to go on."""
    if config.budget_labels is not None and n_selected >= config.budget_labels:
        return f"label budget reached ({n_selected}/{config.budget_labels})"
    if reason := budget.exhausted():
        return reason
    if pool_left <= 0:
        return "the pool is exhausted"
    if config.max_rounds is not None and len(reports) >= config.max_rounds:
        return f"{config.max_rounds} rounds done"
    if config.patience is not None and since_lower_loss >= config.patience:
        return f"no better validation loss for {config.patience} rounds (early stop)"
    if config.target and reports:
        split, metric, threshold = TARGET.match(config.target).groups()  # type: ignore[union-attr]
        value = reports[-1].metrics.get(split, {}).get(metric)
        if value is not None and value >= float(threshold):
            return f"target reached: {split}.{metric} = {value:.4f} >= {threshold}"
    if config.stop_when_gain_below:
        return autopilot.should_stop(GainRule.parse(config.stop_when_gain_below),
                                     [r.metrics.get("forecast") for r in reports])
    return ""


def needs_validation(config: DistillConfig) -> list[str]:
    """The settings of a run that cannot work without validation labels."""
    return [name for name, on in (
        (f"target {config.target}", bool(config.target and config.target.startswith("val."))),
        ("patience", config.patience is not None),
        ("stop_when_gain_below", bool(config.stop_when_gain_below)),
        (f"free_labels {config.free_labels}", bool(config.free_labels))) if on]


class Distiller:
    """Starts, resumes and plans runs in one project's store. The driver (`_drive`) is a short loop over the steps;
    everything a run carries is in its RunState, everything fixed for it in its RunContext."""

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
        self.on_event: EventFn = on_event or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        self.ledger = Ledger(store)
        self.runs = RunLog(store)

    def _components(self, config: DistillConfig) -> Components:
        get = self.plugins.get
        student_cls = get("student", config.student).cls
        student_cls(**config.student_options)  # options are checked before anything is spent
        doubt = get("doubt", config.doubt).cls(**config.doubt_options) if config.doubt else None
        if doubt is not None and student_cls.input != "embeddings":
            raise KdError(f"doubt judges labels with out-of-fold students, too dear for the {config.student} "
                          "student", "doubt with an embeddings student (logreg, svm, lda, ...)")
        if config.fused_labels and student_cls.input != "embeddings":
            raise KdError(f"fused labels judge each label with out-of-fold students, too dear for the {config.student} "
                          "student", "fuse labels with an embeddings student (logreg, svm, lda, ...)")
        free = get("free_labels", config.free_labels).cls(**config.free_labels_options) if config.free_labels else None
        if config.method == "auto" and student_cls.input == "embeddings":
            # auto decides whether to doubt and to self-train; the run's own choice of plugin, else the default ones
            doubt = doubt or self._optional("doubt", AUTO_DOUBT)
            free = free or self._optional("free_labels", AUTO_FREE_LABELS)
        if free is not None and student_cls.input != "embeddings":
            raise KdError(f"free_labels trains on pool documents' embeddings, which the {config.student} student "
                          "does not read", "use an embeddings student (logreg, svm, lda, ...)")
        return Components(get("teacher", config.teacher).cls(**config.teacher_options),
                          get("selector", config.selector).cls(**config.selector_options),
                          get("selector", config.seed_selector).cls(), student_cls,  # type: ignore[arg-type]
                          doubt, free)  # type: ignore[arg-type]

    def _optional(self, kind: str, name: str) -> Any:
        """A plugin that auto may use when it is installed (it is a plugin like any other, and may be absent)."""
        found = self.plugins.registered(kind)
        return found[name].cls() if name in found else None

    @staticmethod
    def _check_generation(config: DistillConfig, teacher: Teacher) -> None:
        if config.generate and not isinstance(teacher, SampleWriter):
            raise KdError(f"generate = {config.generate} needs a teacher that writes samples; {teacher.name} does "
                          "not", "use --teacher llm")

    def _check_teacher(self, config: DistillConfig, teacher: Teacher, spent_usd: float = 0.0) -> None:
        """What can be known before a run spends anything."""
        teacher.check_ready()
        self._check_generation(config, teacher)
        self._check_validation(config)
        if config.budget_usd is None and not config.stop_when_gain_below:
            return
        context = TeachContext(self.labels, self.descriptions, extreme_docs=self._extreme_docs)
        estimate = teacher.estimate([], context, 1)
        if config.budget_usd is not None and not estimate.priced:
            raise ConfigError(f"a USD budget cannot be enforced: the price of {teacher.model_name} is "
                              f"{estimate.price_source}", "give the teacher's prices (price_in and price_out, USD per "
                                                          "million tokens)")
        left = None if config.budget_usd is None else config.budget_usd - spent_usd
        if left is not None and estimate.reserve_min_usd > left:
            raise ConfigError(f"budget_usd {usd(config.budget_usd)} cannot buy a single teacher call: "
                              f"{usd(max(0.0, left))} is left, and every request reserves at least "
                              f"{usd(estimate.reserve_min_usd)} before it is sent (its worst case: every prompt byte "
                              "a token, the answer at max_tokens)",
                              f"give budget_usd at least {usd(spent_usd + estimate.reserve_min_usd)}, or a smaller "
                              "max_tokens")
        per_usd = config.stop_when_gain_below and GainRule.parse(config.stop_when_gain_below).per_labels is None
        if per_usd and (not estimate.priced or teacher.estimate([Doc("x", "x")], TeachContext(
                self.labels, self.descriptions), 1).usd <= 0):
            raise ConfigError(f"stop_when_gain_below {config.stop_when_gain_below}: {teacher.model_name} has no "
                              "known price, so a gain per dollar cannot be forecast",
                              "give the rule per labels instead, e.g. 0.005/100")

    def _extreme_docs(self, chars: int) -> list[Doc]:
        return [Doc(d, t) for d, t in self.store.extreme_texts(chars)]

    def _check_validation(self, config: DistillConfig) -> None:
        """Stop rules and free labels that read validation accuracy are refused on a run that will have none,
        rather than silently never firing."""
        has_val = config.val_size() != 0 and self.store.has_split("val")
        if config.method == "auto" and not has_val and not check_truth(self.store, GoldLabels(self.store)).labels:
            raise KdError("method auto chooses on validation or check-sample labels, and this run has neither",
                          "give val_limit above 0 (or auto) on a project with a validation split, or draw and label a "
                          "check sample (`kdstudio check -p DIR --size 100`)")
        wanted = needs_validation(config)
        if not wanted or has_val:
            return
        why = ("val_limit 0 leaves it none" if config.val_size() == 0 else "the project has no validation split")
        fix = ("give val_limit above 0 (or auto)" if config.val_size() == 0 else
               "carve one: `kdstudio split -p DIR val=0.1` (unlabelled pool documents, stratified by gold where "
               "known), or import with --split val=0.1")
        raise KdError(f"{' and '.join(wanted)} need validation labels, and {why}", fix)

    # -- starting and resuming -------------------------------------------------------------------------------

    def start(self, config: DistillConfig) -> RunResult:
        config.validate()
        parts = self._components(config)
        self._check_teacher(config, parts.teacher)
        run_id = self.runs.create(self._recorded(config), simulated=parts.teacher.simulated)
        return self._run(run_id, config, parts, ())

    def _recorded(self, config: DistillConfig) -> dict[str, Any]:
        """The run's settings as logged, with the vectors its students learn from (export needs their encoder)."""
        return {**asdict(config), "vectors": self.embedding_model}

    def resume(self, run_id: int, overrides: dict[str, Any] | None = None) -> RunResult:
        run = self.runs.get(run_id)
        if run is None:
            raise KdError(f"there is no run {run_id}", "see `kdstudio runs`")
        learned_from = run.config.get("vectors", self.embedding_model)
        if learned_from != self.embedding_model:
            raise KdError(f"run {run_id} learned from {learned_from} vectors; the project now embeds with "
                          f"{self.embedding_model}", "start a new run, or switch back with `kdstudio embed --encoder`")
        config, applied = resume_config(run_id, run.config, overrides or {})
        config.validate()
        parts = self._components(config)
        self._check_teacher(config, parts.teacher, self.ledger.run_spend(run_id)[0])
        if applied:
            self.runs.update_config(run_id, self._recorded(config))  # the log says what the run goes on with
        self.runs.set_status(run_id, "running")
        return self._run(run_id, config, parts, tuple(applied))

    def _run(self, run_id: int, config: DistillConfig, parts: Components, applied: tuple[str, ...]) -> RunResult:
        ACTIVE_RUNS.add(run_id)
        ctx: RunContext | None = None
        try:
            ctx = self._context(run_id, config, parts)
            with sized_pools():
                return self._drive(ctx, applied)
        except RunFailed as exc:
            # A student trained on (nearly) nothing must not be shipped as this run's result.
            steps.drop_students(self.runs, self.students_dir.parent, run_id)
            self.runs.set_status(run_id, "failed", stop_reason=exc.message)
            raise
        except BaseException as exc:
            status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
            self.runs.set_status(run_id, status, stop_reason=f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            ACTIVE_RUNS.discard(run_id)
            if ctx is not None and ctx.scorer is not None:
                ctx.scorer.close()

    def _context(self, run_id: int, config: DistillConfig, parts: Components) -> RunContext:
        missing = self.store.pool_without_vector(self.embedding_model)
        if missing:
            raise KdError(f"{missing} pool documents have no {self.embedding_model} vector",
                          "run `kdstudio embed` first")
        index = VectorIndex.from_store(self.store, self.embedding_model)
        index.mark_pool()
        gold = GoldLabels(self.store)
        setup_rng = np.random.default_rng([config.seed, 7919])
        val_ids = self.store.split_sample("val", config.val_size(), setup_rng)
        test_ids = self.store.split_sample("test", config.test_limit, setup_rng, with_gold=True)
        gold.prefetch([*val_ids, *test_ids])  # what the run's metrics read, in one query
        context = steps.teach_context(self.ledger, parts.teacher, config.seed, self.labels, self.descriptions, gold,
                                      vectors=index.vectors, encode=self.encode, embedding_model=self.embedding_model)
        usd, calls = self.ledger.run_spend(run_id)
        runner = TeacherRunner(self.ledger, parts.teacher, context, run_id,
                               Budget(config.budget_calls, config.budget_usd, calls, usd), self.should_stop)
        scorer = None
        if self.engine is not None:
            scorer = PoolScorer(self.engine, self.store, self.embedding_model, parts.student_cls.input,
                                (self.work_dir or self.students_dir.parent / "work") / f"run-{run_id}",
                                lambda: index.free_rows([]))
        free_ids = (index.pool_sample(parts.free_labeller.pool_sample, np.random.default_rng([config.seed, 6151]))
                    if parts.free_labeller is not None else [])
        check = check_truth(self.store, gold)
        return RunContext(run_id, config, self.labels, parts, self.store, self.ledger, self.runs, index, runner,
                          self.students_dir, val_ids, test_ids, gold, int(index.pool.sum()), self.on_event,
                          self.should_stop, self.encode, self.embedding_model, scorer, free_ids, check,
                          self._borrowable(check, val_ids, parts, setup_rng))

    def _borrowable(self, check: CheckTruth, val_ids: list[str], parts: Components,
                    rng: np.random.Generator) -> list[str]:
        """Unchecked documents whose student answers PPI may borrow each round: other validation documents and the
        check sample's unlabelled ones. None where PPI will not be computed (too few checked labels)."""
        if len(check.labels) < PPI_MIN_CHECKED:
            return []
        limit = BORROW_LIMIT if parts.student_cls.input == "embeddings" else BORROW_LIMIT_TEXTS
        taken = set(val_ids)
        others = [d for d in self.store.split_sample("val", limit + len(taken), rng) if d not in taken]
        return (others + list(check.unlabelled))[:limit]

    # -- the driver ----------------------------------------------------------------------------------------------

    def _drive(self, ctx: RunContext, applied: tuple[str, ...]) -> RunResult:
        config = ctx.config
        n_train = ctx.n_pool if config.budget_labels is None else min(ctx.n_pool, config.budget_labels)
        ctx.emit(RunStarted(ctx.run_id, ctx.parts.teacher.simulated, ctx.parts.teacher.model_name, asdict(config),
                            n_train, len(ctx.val_ids), applied))
        if not self.runs.rounds(ctx.run_id):  # a fresh run: said once, before its first label is bought
            steps.check_teacher(ctx)
        steps.label_validation(ctx)
        if not self.runs.rounds(ctx.run_id):
            steps.refuse_a_guessing_teacher(ctx)
        state = self._restored(ctx)
        while True:
            self.store.room_for_indexes()
            if state.pending is None:
                state.stop_reason = "cancelled" if ctx.should_stop() else why_stop(
                    config, state.reports, len(state.selected), ctx.runner.budget, state.since_lower_loss,
                    ctx.n_pool - len(state.chosen))
                if state.stop_reason:
                    break
            batch = steps.select(ctx, state)
            if not batch.items and batch.wanted:
                state.stop_reason = steps.nothing_to_ask(ctx, state, batch)
                break
            outcome = steps.teach(ctx, state, batch)
            if outcome.stopped == "cancelled" or ctx.should_stop():
                self.runs.set_status(ctx.run_id, "cancelled", best_round=state.best_round, stop_reason="cancelled")
                return self._result(ctx, state, "cancelled", "cancelled")
            # What the teacher never answered (the budget stopped it first) goes back to the pool, uncounted; a round
            # that got no answer at all stays saved as selected, and a resume asks it again.
            steps.keep_answered(batch, outcome)
            if batch.wanted and not batch.items:
                state.stop_reason = outcome.stopped or "the teacher answered none of the documents it was asked"
                break
            state.selected.extend(batch.items)
            generated = steps.generate(ctx, state, outcome, batch)
            self.store.room_for_indexes()  # writing its samples loaded index blocks
            trained = steps.train_or_fail(ctx, state, outcome, batch)
            state = steps.keep(ctx, state, trained, outcome, batch, generated)
            if outcome.stopped:
                state.stop_reason = outcome.stopped
                break
            state.round_no += 1
        status = "cancelled" if state.stop_reason == "cancelled" else "finished"
        self.runs.set_status(ctx.run_id, status, best_round=state.best_round, stop_reason=state.stop_reason)
        result = self._result(ctx, state, status, state.stop_reason)
        ctx.emit(RunDone(result))
        return result

    def _restored(self, ctx: RunContext) -> RunState:
        """The run's state from its log. The next selection needs the latest student, which is rebuilt exactly from
        the saved labels; the selector's saved state is put back after that, so that resuming does not update it
        twice."""
        state = restore(ctx.run_id, self.runs.rounds(ctx.run_id))
        if state.selected:
            last = state.reports[-1]
            state.trained = replay(ctx, state.selected, last.round, last.metrics)
        if state.selector_state is not None:
            ctx.parts.selector.load_state_dict(state.selector_state)
        return state

    def _result(self, ctx: RunContext, state: RunState, status: str, reason: str) -> RunResult:
        kept = self.runs.students(ctx.run_id)
        usd, calls = self.ledger.run_spend(ctx.run_id)
        return RunResult(ctx.run_id, status, reason, state.best_round, kept[-1][0] if kept else None,
                         ctx.parts.teacher.simulated, state.reports, calls, usd,
                         state.reports[-1].n_labels if state.reports else 0, self.ledger.run_val_labels(ctx.run_id))

    # -- planning ------------------------------------------------------------------------------------------------

    def plan(self, config: DistillConfig, sample: int = 50) -> Plan:
        """Estimate a run's teacher cost from a sample of its prompts, spending nothing."""
        config.validate()
        teacher = self._components(config).teacher
        self._check_generation(config, teacher)
        n_pool = self.store.pool_size()
        n_train = n_pool if config.budget_labels is None else min(config.budget_labels, n_pool)
        n_val = len(self.store.split_sample("val", config.val_size(), np.random.default_rng(0)))
        n_check = len(check_truth(self.store, GoldLabels(self.store)).labels)
        rng = np.random.default_rng(config.seed)
        # The documents rng.choice(pool ids, ...) would draw, without listing the pool.
        ids = self.store.pool_ids_at(np.sort(rng.choice(n_pool, size=min(sample, n_pool), replace=False))) \
            if n_pool else []
        docs = [Doc(d, t) for d, t in zip(ids, self.store.texts(ids), strict=True)]
        context = steps.teach_context(self.ledger, teacher, config.seed, self.labels, self.descriptions, {},
                                      encode=self.encode, embedding_model=self.embedding_model,
                                      extreme_docs=self._extreme_docs)
        generation = None
        if config.generate and docs and isinstance(teacher, SampleWriter):  # checked above; narrows the type
            rounds = 1 + math.ceil(max(0, n_train - config.seed_size) / max(1, config.batch))
            generation = teacher.estimate_generation(self._sample_request(config, docs), context, max(0, rounds - 1))
        try:
            teacher.check_ready()
            not_ready = None
        except KdError as exc:
            not_ready = exc.message
        prompt = teacher.request(docs[0], context).get("messages", []) if docs else []
        return Plan(teacher.model_name, n_train, n_val, teacher.estimate(docs, context, n_train + n_val + n_check),
                    generation, not_ready, teacher.access(), n_check, prompt)

    def teacher_on_test(self, config: DistillConfig) -> float | None:
        """The teacher's own accuracy on the gold test split, asked outside the ledger (nothing is stored); None for a
        teacher that would be paid for it, or a project without gold test documents."""
        teacher = self._components(config).teacher
        gold = GoldLabels(self.store)
        test = self.store.ids_with_gold("test")
        gold.prefetch(test)
        docs = [Doc(d, t) for d, t in zip(test, self.store.texts(test), strict=True)]
        context = steps.teach_context(self.ledger, teacher, config.seed, self.labels, self.descriptions, gold,
                                      vectors=lambda ids: self.store.vectors(self.embedding_model, ids),
                                      encode=self.encode, embedding_model=self.embedding_model)
        if not docs or teacher.estimate(docs[:20], context, len(docs)).usd > 0 or teacher.consults:
            return None
        answers = {a.doc_id: a.label for a in teacher.label(docs, context)}
        return float(np.mean([answers.get(d.id) == gold[d.id] for d in docs]))

    def _sample_request(self, config: DistillConfig, docs: list[Doc]) -> GenerationRequest:
        """A generation request shaped like a real one, for pricing."""
        shots = [(d.text, self.labels[i % len(self.labels)]) for i, d in enumerate(docs[:config.generate_shots])]
        wrong = [(t, lab, lab) for t, lab in shots]
        return GenerationRequest(config.generate_samples, shots, shots, wrong,
                                 wrong if config.generate_hard_negatives else [],
                                 {x: {"precision": 0.5, "recall": 0.5, "f1": 0.5} for x in self.labels}
                                 if config.generate_report else None)
