"""Project: the one façade that the CLI, the TUI and the tests use."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdstudio import snapshot
from kdstudio.check import (
    BORROW_LIMIT,
    BORROW_LIMIT_TEXTS,
    MIN_CHECKED,
    CheckDraw,
    CheckReport,
    CheckTruth,
    check_truth,
    grade_run_student,
)
from kdstudio.config import (
    CONFIG_NAME,
    DUCKDB_MEMORY_EMBED,
    DUCKDB_MEMORY_RUN,
    EmbeddingSettings,
    Label,
    ProjectConfig,
    duckdb_memory,
    validate_labels,
)
from kdstudio.embeddings import BuildProgress, EmbedReport, ProgressFn, embed_missing
from kdstudio.errors import ConfigError, KdError, ProjectLocked, ProjectNotFound, ReadOnlyProject, StaleStudent
from kdstudio.events import Event, EventFn, RoundDone, RunStarted
from kdstudio.interfaces import (
    DatasetTable,
    Encoder,
    Engine,
    ExportContext,
    HumanLabel,
    ReviewBackend,
    ReviewEvent,
    Student,
)
from kdstudio.loop import ACTIVE_RUNS, DistillConfig, Distiller, Plan, RunResult, resolve_artifact
from kdstudio.plugins import Plugins, get_plugins
from kdstudio.sampling import stratified_sample
from kdstudio.snapshot import Snapshot
from kdstudio.store import (
    DB_NAME,
    ImportOptions,
    ImportReport,
    Ledger,
    RoundRow,
    RunLog,
    RunRow,
    SpendRow,
    Store,
    import_file,
    import_table,
)
from kdstudio.store.browse import Browse, Filters, Page
from kdstudio.store.gold_labels import GoldLabels
from kdstudio.store.labelled import LabelFilter
from kdstudio.store.review import Candidate, ReviewStore
from kdstudio.threads import sized_pools

if TYPE_CHECKING:
    from kdstudio.audit import AuditReport
    from kdstudio.cascade import CascadeReport
    from kdstudio.export import ExportReport
    from kdstudio.labels_export import Written
    from kdstudio.live_review import LiveLoop
    from kdstudio.live_round import LiveRound
    from kdstudio.review import Agreement, ConnectReport, PullReport, PushReport, ReviewItem, ReviewState


COLD_START = 50  # documents a cold-start triage queue holds: a session's worth; opening the tab again picks afresh
COLD_START_SAMPLE = 20000  # untouched pool documents the cold start orders: diversity's own candidate sample


@dataclass
class TriageItem:
    doc_id: str
    text: str
    teacher_label: str | None  # None in the cold-start order: nobody has labelled the document
    confidence: float | None
    student_label: str | None


@dataclass
class Status:
    name: str
    labels: list[str]
    documents: list[tuple[str, str, int]]  # (split, source, count)
    labels_by_source: list[tuple[str, int]]
    label_distribution: list[tuple[str, int]]  # effective labels (human over teacher)
    gold_distribution: list[tuple[str, str, int]]  # (label, split, count)
    embeddings: list[tuple[str, int, int]]  # (model, documents, dimension)
    spend_usd: float
    teacher_calls: int
    teacher_errors: int
    runs: list[RunRow] = field(default_factory=list)
    vectors_in_use: str = ""  # the key of the project's encoder's vectors
    # The check sample: size (documents in it), checked (with a reference label), by_people, by_gold. Plain numbers,
    # so that the snapshot a running process publishes carries them as they are.
    check: dict[str, int] = field(default_factory=lambda: CheckTruth({}, 0, 0).counts(0))

    @property
    def total_documents(self) -> int:
        return sum(n for _, _, n in self.documents)


@dataclass(frozen=True)
class CorpusCounts:
    """What `status` counts over the whole corpus. A run changes none of it but by generating documents, so a run's
    progress snapshots count it once, not every round: each count scans the corpus (0.1-0.2 s at 10M documents)."""

    documents: list[tuple[str, str, int]]
    gold_distribution: list[tuple[str, str, int]]
    embeddings: list[tuple[str, int, int]]
    check: dict[str, int]


def _interrupted(run: RunRow) -> RunRow:
    """A run the database says is running, that no process runs: shown as interrupted (it is resumable)."""
    if run.status == "running" and run.id not in ACTIVE_RUNS:
        return replace(run, status="interrupted", stop_reason=run.stop_reason or
                       f"stopped without finishing (killed?): resume with `kdstudio distill --resume --run {run.id}`")
    return run


class ProgressView:
    """The read-only commands' view of a project that another process is distilling: the snapshot that process
    publishes (see kdstudio.snapshot), since DuckDB lets no other process read the file meanwhile."""

    def __init__(self, published: Snapshot) -> None:
        self.snapshot = published

    @property
    def busy(self) -> str | None:
        return self.snapshot.describe()

    def status(self) -> Status:
        """Documents, labels, embeddings, spend and runs: what `kdstudio status` shows."""
        return Status(**self.snapshot.status, runs=self.snapshot.runs)

    def runs(self) -> list[RunRow]:
        """Every run, oldest first; a run that a killed process left running shows as interrupted."""
        return self.snapshot.runs

    def rounds(self, run_id: int) -> list[RoundRow]:
        """A run's rounds, unfinished ones included (phase != done)."""
        return self.snapshot.rounds.get(run_id, [])

    def cost(self) -> list[SpendRow]:
        return self.snapshot.cost

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        # Anything beyond what the snapshot holds needs the database, which the distilling process holds alone.
        if name.startswith("_"):
            raise AttributeError(name)
        raise KdError(f"distill run {self.snapshot.run_id} is running in process {self.snapshot.pid} and holds the "
                      "project; while it runs, only status, runs and cost can read it (DuckDB lets no other process "
                      "open it)",
                      "wait for the run to end, or stop it (Ctrl-C there: it resumes), then run the command again")


def open_engine(name: str, **options: Any) -> Engine:
    """A registered engine (`kdstudio plugins` lists them) with its options."""
    return get_plugins().get("engine", name).cls(**options)  # type: ignore[return-value]


# The rounds of this many latest runs go into the progress snapshot written after every round: a project with hundreds
# of runs would otherwise rewrite megabytes per round.
SNAPSHOT_RUNS = 20


class Project:
    """A project directory: `kdstudio.duckdb` (all data) and `kdstudio.toml` (settings a person edits)."""

    busy: str | None = None  # see ProgressView

    def __init__(self, directory: Path, config: ProjectConfig, store: Store,
                 plugins: Plugins | None = None) -> None:
        self.directory = directory
        self.config = config
        self.store = store
        self._plugins = plugins
        self._embedder: Encoder | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    @classmethod
    def init(cls, directory: str | Path, labels: list[Label], name: str | None = None) -> Project:
        """Create a project in `directory` (kdstudio.toml and kdstudio.duckdb) with this label set."""
        directory = Path(directory)
        validate_labels(labels, "--labels")
        if (directory / DB_NAME).exists() or (directory / CONFIG_NAME).exists():
            raise ConfigError(f"{directory} already holds a kdstudio project", "open it, or pick a new directory")
        directory.mkdir(parents=True, exist_ok=True)
        config = ProjectConfig(name=name or directory.resolve().name, labels=labels)
        store = Store.create(directory / DB_NAME)
        config.save(directory)
        return cls(directory, config, store)

    @classmethod
    def open(cls, directory: str | Path, *, read_only: bool = False) -> Project:
        """Open an existing project; `read_only` for commands that only look."""
        directory = Path(directory)
        if not (directory / DB_NAME).exists():
            raise ProjectNotFound(f"{directory} is not a kdstudio project (no {DB_NAME})",
                                  f"create one with `kdstudio init {directory} --labels a,b,c`")
        config = ProjectConfig.load(directory)
        return cls(directory, config, Store.open(directory / DB_NAME, read_only=read_only))

    @classmethod
    def for_reading(cls, directory: str | Path) -> Project | ProgressView:
        """The project (read-only where its folder cannot be written), or, while another process distills in it, the
        progress that process publishes."""
        try:
            return cls.open(directory)
        except ReadOnlyProject:
            return cls.open(directory, read_only=True)
        except ProjectLocked as exc:
            published = snapshot.read(Path(directory), exc.pid)
            if published is None:
                raise
            return ProgressView(published)

    @staticmethod
    def exists(directory: str | Path) -> bool:
        """Whether `directory` holds a kdstudio project."""
        return (Path(directory) / DB_NAME).exists()

    def for_worker(self) -> Project:
        """This project for a worker thread: the same settings and plugins, its own database cursor (a Store is not
        shared between threads). Close it when the worker ends; this one stays open."""
        worker = Project(self.directory, self.config, self.store.cursor(), self._plugins)
        worker._embedder = self.embedder  # the loaded model is shared, not loaded twice
        return worker

    def close(self) -> None:
        """Close the project's database (a `with` block does it)."""
        self.store.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def plugins(self) -> Plugins:
        """Every registered plugin, by kind."""
        return self._plugins or get_plugins()

    @property
    def labels(self) -> list[str]:
        """The label names, in the project's order."""
        return self.config.label_names

    # -- data ----------------------------------------------------------------------------------------

    def carve_split(self, split: str, fraction: float, seed: int = 0) -> int:
        """Move `fraction` of the pool to `split` (val or test), stratified by gold label where known, taking only
        documents nothing has labelled or asked about; returns how many moved."""
        import pyarrow as pa

        if split not in ("val", "test") or not 0 < fraction < 1:
            raise KdError(f"cannot carve {split}={fraction}", "give val=FRACTION or test=FRACTION, between 0 and 1")
        rows = self.store.untouched_pool()
        n = round(fraction * len(self.store.ids_in_split("pool", source="imported")))
        if not rows or n < 1 or n > len(rows):
            raise KdError(f"the pool has {len(rows)} documents nothing has touched, and {split}={fraction} wants {n}",
                          "import more documents, or ask for a smaller share")
        table = pa.table({"id": [r[0] for r in rows], "gold": [r[1] or "" for r in rows]})
        chosen = stratified_sample(table, n, ["gold"], seed).column("id").to_pylist()
        self.store.move_to_split(chosen, split)
        return len(chosen)

    def import_file(self, path: str | Path, options: ImportOptions | None = None) -> ImportReport:
        """Import CSV, TSV, JSONL or Parquet in one transaction: a bad row changes nothing and says where it is."""
        # Not held to a DuckDB limit: at 1 GB an import of 10M documents failed (the unique indexes it fills must fit in
        # memory); unbounded it peaked at 14.3 GB (docs/scaling.md).
        return import_file(self.store, Path(path), self.labels, options or ImportOptions())

    @classmethod
    def from_dataset(cls, name: str, directory: str | Path, **kwargs: Any) -> tuple[Project, ImportReport]:
        """Open the project in `directory`, or create it with the dataset's label set, and import the dataset."""
        plugins = get_plugins()
        data = plugins.get("dataset", name).cls().load()
        if cls.exists(directory):
            project = cls.open(directory)
        else:
            project = cls.init(directory, [Label(label, data.descriptions.get(label, "")) for label in data.labels])
        try:
            return project, project._import_dataset_table(name, data, **kwargs)
        except BaseException:
            project.close()
            raise

    def import_dataset(self, name: str, *, limit: int | None = None, split: dict[str, float] | None = None,
                       seed: int = 0) -> ImportReport:
        """Import a bundled corpus (see `kdstudio datasets list`); `limit` takes a stratified slice
        and `split` carves val/test out of the pool."""
        data = self.plugins.get("dataset", name).cls().load()
        return self._import_dataset_table(name, data, limit=limit, split=split, seed=seed)

    def _import_dataset_table(self, name: str, data: DatasetTable, *, limit: int | None = None,
                              split: dict[str, float] | None = None, seed: int = 0) -> ImportReport:
        """The dataset's own train/test split is kept; `split` carves more out of the pool (default: 10% val,
        plus 20% test when the dataset has no test split of its own). `limit` takes a stratified slice."""
        missing = sorted(set(data.labels) - set(self.labels))
        if missing:
            raise ConfigError(f"dataset {name} has labels this project lacks: {missing}",
                              "import it into a new directory, which takes the dataset's label set")
        table = data.table
        if limit is not None:
            strata = [c for c in (data.label_column, data.split_column) if c]
            table = stratified_sample(table, limit, strata, seed)
        if split is None:
            split = {"val": 0.1} if data.split_column else {"val": 0.1, "test": 0.2}
        options = ImportOptions(text_column=data.text_column, id_column=data.id_column,
                                label_column=data.label_column, split_column=data.split_column, split=split,
                                seed=seed, drop_empty=True)
        return import_table(self.store, table, f"dataset:{name}", self.labels, options)

    # -- embeddings ----------------------------------------------------------------------------------

    @property
    def embedder(self) -> Encoder:
        """The project's encoder (kdstudio.toml's [embedding]), built from its plugin."""
        if self._embedder is None:
            self._embedder = self.encoder_for(self.config.embedding)
        return self._embedder

    def encoder_for(self, settings: EmbeddingSettings) -> Encoder:
        """The encoder plugin these embedding settings name, configured (nothing is loaded yet)."""
        cls = self.plugins.get("encoder", settings.encoder).cls
        return cls(settings.model, settings.max_length, settings.batch_size, **settings.options)  # type: ignore[call-arg]

    @property
    def vector_key(self) -> str:
        """The name of the project's vectors in the store (several encoders' vectors coexist)."""
        return self.embedder.key

    def embed(self, on_progress: ProgressFn | None = None, *, model: str | None = None, encoder: str | None = None,
              encoder_options: dict[str, Any] | None = None, engine: Engine | None = None,
              on_build: BuildProgress | None = None) -> EmbedReport:
        """Embed every document that has no vector yet: in this process, or on `engine` (a cluster). A new `encoder`
        or `model` becomes the project's (kdstudio.toml) once its vectors are there; `on_build` hears about an
        encoder built on first use (the static one is distilled once per machine)."""
        previous = self.config.embedding
        wanted = replace(previous, **{k: v for k, v in (("model", model), ("encoder", encoder),
                                                         ("options", encoder_options)) if v is not None})
        if encoder is not None and encoder != previous.encoder and encoder_options is None:
            wanted = replace(wanted, options={})  # one encoder's options mean nothing to another
        if wanted == previous:
            return self._embed(on_progress, engine, on_build)
        self.config.embedding = wanted
        self._embedder = None
        try:
            report = self._embed(on_progress, engine, on_build)
        except BaseException:
            self.config.embedding, self._embedder = previous, None
            raise
        # Recorded (options as their typed values), so that the next `distill` and `export` use these vectors.
        self.config.embedding.options = {k: getattr(self.embedder, k) for k in self.config.embedding.options}
        self.config.save(self.directory)
        return report

    def _embed(self, on_progress: ProgressFn | None, engine: Engine | None,
               on_build: BuildProgress | None) -> EmbedReport:
        with self.store.memory_limit(duckdb_memory(DUCKDB_MEMORY_EMBED)):
            if engine is not None:
                from kdstudio.scale import embed_with

                return embed_with(engine, self.store, self.embedder, self.work_dir(engine) / "embed", on_progress,
                                  on_build, self.config.embedding.vector_type)
            return embed_missing(self.store, self.embedder, on_progress, on_build=on_build,
                                 vector_type=self.config.embedding.vector_type)

    def work_dir(self, engine: Engine) -> Path:
        """Where the shards of an engine's jobs go: the engine's shared scratch folder, or inside the project."""
        return Path(engine.scratch) / self.config.name if engine.scratch else self.directory / "work"

    # -- distillation ----------------------------------------------------------------------------------

    def distill(self, config: DistillConfig | None = None, *, resume: int | None = None,
                overrides: dict[str, Any] | None = None, on_event: EventFn | None = None,
                should_stop: Callable[[], bool] | None = None,
                on_embed_progress: ProgressFn | None = None, engine: Engine | None = None) -> RunResult:
        """Start a run with `config`, or resume run `resume` (`overrides`: settings given again; see
        kdstudio.loop.resume_config for what a resume applies and what it refuses). With `engine`,
        embedding and pool scoring run there; the results are the same."""
        self.check_label_set()
        self.embed(on_embed_progress, engine=engine)  # a no-op when every document has its vector
        with self.store.memory_limit(duckdb_memory(DUCKDB_MEMORY_RUN)), self.store.table_scans_only():
            distiller = self._distiller(self._publishing(on_event), should_stop, engine)
            try:
                if resume is not None:
                    return distiller.resume(resume, overrides)
                return distiller.start(config or self.distill_config())
            finally:
                snapshot.withdraw(self.directory)  # the database is readable again

    def _publishing(self, on_event: EventFn | None) -> EventFn:
        """`on_event`, and after it a progress snapshot for other processes at the start and after each round."""
        current: dict[str, Any] = {}

        def handle(event: Event) -> None:
            if on_event is not None:
                on_event(event)
            if isinstance(event, RunStarted):
                current.update(run_id=event.run_id, round=None, corpus=self.corpus_counts())
            elif isinstance(event, RoundDone):
                current["round"] = event.report.round
                if event.report.generated:  # the only documents a run adds
                    current["corpus"] = self.corpus_counts()
            else:
                return
            self.publish_progress(current["run_id"], current["round"], current["corpus"])

        return handle

    def publish_progress(self, run_id: int, round_no: int | None, corpus: CorpusCounts | None = None) -> None:
        """Write the snapshot that other processes read while this one holds the database."""
        current = self.status(corpus)
        runs = current.runs
        status = asdict(current)
        status.pop("runs")
        snapshot.publish(self.directory, Snapshot(
            pid=os.getpid(), written_at=snapshot.now(), run_id=run_id, round=round_no, status=status, runs=runs,
            rounds={run.id: self.rounds(run.id) for run in runs[-SNAPSHOT_RUNS:]}, cost=self.cost()))

    def distill_config(self, flags: dict[str, Any] | None = None) -> DistillConfig:
        """A run's settings: DistillConfig's defaults < this project's [distill] table < `flags`."""
        return DistillConfig.layered(self.config.distill, flags or {})

    def plan(self, config: DistillConfig) -> Plan:
        """What `distill(config)` would cost the teacher, from the prompts alone: nothing is sent."""
        self.check_label_set()
        return self._distiller().plan(config)

    def teacher_on_test(self, config: DistillConfig) -> float | None:
        """How often the teacher itself is right on the gold test split (None when that would cost money)."""
        self.check_label_set()
        return self._distiller().teacher_on_test(config)

    def _distiller(self, on_event: EventFn | None = None, should_stop: Callable[[], bool] | None = None,
                   engine: Engine | None = None) -> Distiller:
        return Distiller(self.store, self.labels, {lab.name: lab.description for lab in self.config.labels},
                         self.vector_key, self.plugins, self.directory / "students", on_event,
                         should_stop, encode=self.embedder.encode, engine=engine,
                         work_dir=self.work_dir(engine) / "score" if engine is not None else None)

    def cost(self) -> list[SpendRow]:
        """Teacher spend by run and model, from the ledger."""
        return Ledger(self.store).spend_report()

    def runs(self) -> list[RunRow]:
        """Every run, oldest first; a run that a killed process left running shows as interrupted."""
        return [_interrupted(run) for run in RunLog(self.store).all()]

    def latest_run(self) -> RunRow | None:
        """The newest run (a killed one shows as interrupted), or None."""
        run = RunLog(self.store).latest()
        return _interrupted(run) if run is not None else None

    def rounds(self, run_id: int) -> list[RoundRow]:
        """A run's rounds, unfinished ones included (phase != done)."""
        return RunLog(self.store).rounds(run_id)

    def students(self) -> list[dict[str, Any]]:
        """Every kept student (one per run: its best round), newest last."""
        return [{"id": sid, "run_id": run_id, "round": round_no, "kind": kind, "metrics": metrics}
                for sid, run_id, round_no, kind, _, metrics in RunLog(self.store).students()]

    def check_label_set(self) -> None:
        """Every label the project's data holds must still be in kdstudio.toml: a label removed by hand would
        otherwise surface as a KeyError halfway through a run or an export."""
        missing = [x for x in self.store.labels_in_use() if x not in self.labels]
        if missing:
            shown = ", ".join(repr(x) for x in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise ConfigError(f"the project holds labels that {self.directory / CONFIG_NAME} no longer lists: {shown}",
                              "add them back as [[labels]] entries (a label set can grow, not shrink)")

    def load_student(self, student_id: int | None = None) -> tuple[Student, dict[str, Any]]:
        """A kept student (default: the best of the latest run) and its record. Every use of a kept student loads it
        here: damaged files, and vectors other than the ones it learned from, are one clear error (StaleStudent for
        the latter) instead of a crash in the middle of whatever asked."""
        self.check_label_set()
        kept = RunLog(self.store).students()
        if student_id is not None:
            kept = [row for row in kept if row[0] == student_id]
        if not kept:
            raise KdError("no trained student in this project" if student_id is None else
                          f"no student {student_id}", "run `kdstudio distill` first")
        sid, run_id, round_no, kind, path, metrics = kept[-1]
        folder = resolve_artifact(self.directory, path)
        if not folder.is_dir():
            raise KdError(f"student {sid}'s files are missing ({folder})", "run `kdstudio distill` again")
        record = {"id": sid, "run_id": run_id, "round": round_no, "kind": kind, "path": str(folder),
                  "metrics": metrics}
        try:
            student = self.plugins.get("student", kind).cls.load(folder)
        except KdError:
            raise
        except Exception as exc:  # a truncated or hand-edited file, whatever the student plugin's format
            raise KdError(f"student {sid}'s files in {folder} are damaged ({type(exc).__name__}: {exc})",
                          "distill again, or restore the project folder from a backup") from None
        self._check_same_vectors(student, record)
        return student, record

    # -- the teacher's labels under audit ---------------------------------------------------------------

    def audit(self, *, doubt: str = "cleanlab", doubt_options: dict[str, Any] | None = None,
              top: int | None = None, run_id: int | None = None, teacher: str | None = None) -> AuditReport:
        """Rank the teacher labels no person has checked by how likely they are wrong: each judged by students that
        never saw it (out of fold, on every label, people's included), with the teacher's confidence and the
        nearest labelled documents as evidence. `run_id` and `teacher` (a model, as `cost` names it) audit one run's
        or one teacher's labels only."""
        self.check_label_set()
        if run_id is not None and RunLog(self.store).get(run_id) is None:
            raise KdError(f"there is no run {run_id}", "see `kdstudio runs`")
        candidates = ReviewStore(self.store).candidates(run_id, teacher)
        if not candidates and (run_id is not None or teacher is not None):
            models = sorted({row.model for row in self.cost() if row.run_id == run_id or run_id is None})
            raise KdError(f"no unchecked teacher label{f' of run {run_id}' if run_id is not None else ''}"
                          f"{f' from teacher {teacher!r}' if teacher else ''}",
                          f"teachers that answered: {', '.join(models) or 'none'}")
        report = self._audit(candidates, doubt, doubt_options or {})
        return replace(report, suspects=report.suspects[:top]) if top else report

    def _audit(self, candidates: list[Candidate], doubt: str, doubt_options: dict[str, Any]) -> AuditReport:
        from kdstudio.audit import AuditReport, audit_labels

        judge = self.plugins.get("doubt", doubt).cls(**doubt_options)
        student_name, student_options = self._judging_student()
        student_cls = self.plugins.get("student", student_name).cls
        if not candidates:
            raise KdError("no teacher label to audit (none, or every one was checked by a person)",
                          "buy teacher labels first: `kdstudio distill`")
        humans = dict(Ledger(self.store).human_examples())
        model = self.vector_key
        with sized_pools():
            suspects, trusted = audit_labels(candidates, humans, lambda ids: self.store.vectors(model, ids),
                                             self.labels, judge, student_cls,
                                             student_options)  # type: ignore[arg-type]
        if not suspects:
            raise KdError(f"{len(candidates) + trusted} labels are too few to audit",
                          "buy at least 10 teacher labels (`kdstudio distill`) first")
        return AuditReport(doubt, student_name, len(candidates), trusted, suspects)

    def export_labels(self, out: str | Path, where: LabelFilter | None = None, *, suspicion: bool = False,
                      min_suspicion: float | None = None) -> Written:
        """The labelled documents `where` picks, written to `out` (CSV, JSONL or Parquet by its extension; replaced
        whole or not at all), with a dataset card beside it. `suspicion` adds the audit's suspicion of each teacher
        label (the audit's out-of-fold students are fitted for it); `min_suspicion` keeps the labels that suspect."""
        from kdstudio import labels_export as out_file
        from kdstudio.store.labelled import labelled_batches, teacher_against_truth

        where, out = where or LabelFilter(), Path(out)
        out_file.format_of(out)
        if not out.parent.is_dir():
            raise KdError(f"there is no folder {out.parent}", "create it first, or write the file elsewhere")
        if where.run_id is not None and RunLog(self.store).get(where.run_id) is None:
            raise KdError(f"there is no run {where.run_id}", "see `kdstudio runs`")
        scores = None
        if suspicion or min_suspicion is not None:
            scores = {s.doc_id: s.suspicion for s in self.audit(run_id=where.run_id).suspects}
        written = out_file.write_labels(
            out_file.with_suspicion(labelled_batches(self.store, where), scores, min_suspicion),
            out_file.Written(out, out_file.card_path(out), suspicion=scores is not None))
        written.teacher = out_file.grade_teachers(teacher_against_truth(self.store))
        out_file.write_card(written, self.config.name, where.describe(min_suspicion))
        return written

    def _judging_student(self) -> tuple[str, dict[str, Any]]:
        """The latest run's student when it reads embeddings (cheap to fit five times), else logistic regression."""
        run = RunLog(self.store).latest()
        config = run.config if run is not None else {}
        name = config.get("student", "logreg")
        if self.plugins.get("student", name).cls.input != "embeddings":
            return "logreg", {}
        return name, config.get("student_options", {})

    # -- human review ----------------------------------------------------------------------------------

    def review_push(self, *, filter: str | None = None, limit: int | None = None, below: float | None = None,
                    backend: str = "labelstudio") -> PushReport:
        """Send teacher labels that no person has checked to the review backend, least certain first; a document
        already there is not sent again. Settings not given come from the project's [review] table."""
        return self.review_send(self.review_preview(filter=filter, limit=limit, below=below), backend=backend)

    def review_send(self, items: Sequence[ReviewItem], *, backend: str = "labelstudio") -> PushReport:
        """Send these documents (with the label to show beside each, if any) to the review backend's project, made
        on the first push; a document already there is not sent again."""
        from kdstudio.review import PushReport

        reviewer = self.plugins.get("review_backend", backend).cls()
        store = ReviewStore(self.store)
        result = reviewer.push(f"kdstudio {self.config.name}", self.labels,
                               {x.name: x.description for x in self.config.labels}, items,
                               store.project_ref(backend, reviewer.location))
        store.save_project_ref(backend, reviewer.location, result.project_ref)
        return PushReport(backend, reviewer.location, result.project_ref, result.created, len(items), result.sent,
                          result.already_there)

    def review_preview(self, *, filter: str | None = None, limit: int | None = None, below: float | None = None
                       ) -> list[ReviewItem]:
        """What `review_push` with these settings would send, in its order; nothing is contacted."""
        from kdstudio.review import ReviewItem, choose

        defaults = self.config.review
        filter = filter or defaults.filter
        below = defaults.below if below is None else below
        limit = defaults.limit if limit is None else limit
        self.check_label_set()
        if filter == "check":  # blind, as in Triage: people label the check sample without a prediction to follow
            ids = self._unchecked()[:limit]
            return [ReviewItem(d, t, None, None, None) for d, t in zip(ids, self.store.texts(ids), strict=True)]
        candidates = ReviewStore(self.store).candidates()
        if filter == "suspect":
            candidates = self._suspect_order(candidates)
        return choose(candidates, filter, limit, below, self._student_predictor() if filter == "disagreement" else None)

    def _unchecked(self) -> list[str]:
        """Check documents no person has labelled yet (gold does not count: people check what they will be told)."""
        human = set(Ledger(self.store).human_labelled())
        return [d for d in self.store.ids_in_split("check") if d not in human]

    def review_state(self) -> ReviewState:
        """Where review stands: teacher labels no person has checked (and how many are below the project's review
        threshold), people's labels, and the teacher's agreement with them."""
        from kdstudio.review import ReviewState

        candidates = ReviewStore(self.store).candidates()
        below = self.config.review.below
        return ReviewState(len(candidates), sum(c.confidence is None or c.confidence < below for c in candidates),
                           below, len(Ledger(self.store).human_labelled()), self.review_report())

    def review_pull(self, *, backend: str = "labelstudio") -> PullReport:
        """Bring people's labels back as human labels (they override the teacher's in training), and withdraw those
        whose annotation is gone from the review project. Everything is read from the backend before anything is
        written."""
        from kdstudio.review import PullReport

        reviewer = self.plugins.get("review_backend", backend).cls()
        store = ReviewStore(self.store)
        pulled = reviewer.pull(self.review_project_ref(reviewer), self.labels)
        added, already, unknown = store.add_human_labels(_human_rows(pulled.labels))
        withdrawn = store.withdraw_missing(pulled.scope, pulled.present) if pulled.scope else 0
        return PullReport(backend, reviewer.location, len(pulled.labels), added, already, unknown, pulled.ignored,
                          withdrawn)

    def review_project_ref(self, reviewer: ReviewBackend, *, create: bool = False) -> str:
        """The review backend's id of this project's review project (made by the first push, or now with
        `create`)."""
        ref = ReviewStore(self.store).project_ref(reviewer.name, reviewer.location)
        if ref is None and create:
            self.review_send([], backend=reviewer.name)
            ref = ReviewStore(self.store).project_ref(reviewer.name, reviewer.location)
        if ref is None:
            raise KdError(f"nothing was pushed to {reviewer.name} at {reviewer.location} from this project",
                          "run `kdstudio review push` first")
        return ref

    def review_receive(self, event: ReviewEvent) -> tuple[int, int]:
        """People's labels as a live review tool reports them (added, as `review_pull` adds them) and the ones it
        takes back, in one call each; returns (added, withdrawn)."""
        store = ReviewStore(self.store)
        added, _, _ = store.add_human_labels(_human_rows(event.labels))
        return added, store.withdraw(event.withdrawn)

    def review_connect(self, url: str, *, backend: str = "labelstudio") -> ConnectReport:
        """Register a running `kdstudio review serve` at `url` with this project's review project (made now if
        nothing was pushed yet): the review tool asks it for predictions and tells it each annotation."""
        from kdstudio.review import ConnectReport

        reviewer = self.live_reviewer(backend)
        result = reviewer.connect(self.review_project_ref(reviewer, create=True), url)
        return ConnectReport(backend, reviewer.location, result.project_ref, url, result.model_backend,
                             result.webhook)

    def live_reviewer(self, backend: str) -> ReviewBackend:
        """The review backend `backend`, refused in one line if it offers no live loop."""
        reviewer = self.plugins.get("review_backend", backend).cls()
        if not reviewer.live:
            raise reviewer.no_live_loop()
        return reviewer

    @classmethod
    def live_loop(cls, directory: Path, *, every: int = 10, batch: int = 10, backend: str = "labelstudio",
                  say: Callable[[str], None] = print) -> LiveLoop:
        """The live review loop over the project at `directory` (kdstudio.live_review): it opens the project for
        each write and each round, never holding it, so other commands can use it meanwhile."""
        from kdstudio.live_review import LiveLoop, LiveSettings

        return LiveLoop(directory, LiveSettings(every, batch, backend), say, cls.open)

    def live_round(self, run_id: int | None, batch: int, in_review: set[str], backend: str) -> LiveRound:
        """One round of the live review loop (kdstudio.live_round): a student on every current label, and the
        `batch` documents its selector wants people to label next."""
        from kdstudio.live_round import live_round

        self.check_label_set()
        return live_round(self, run_id, batch, in_review, backend)

    def review_report(self) -> Agreement:
        """Agreement between the teacher and people, overall and per class: the teacher's measured accuracy."""
        from kdstudio.review import agreement

        return agreement(ReviewStore(self.store).agreement_pairs(), self.labels)

    def _suspect_order(self, candidates: list[Candidate]) -> list[Candidate]:
        """Candidates in audit order (most likely wrong first), judged as `audit()` judges them."""
        rank = {s.doc_id: i for i, s in enumerate(self._audit(candidates, "cleanlab", {}).suspects)}
        return sorted(candidates, key=lambda c: rank.get(c.doc_id, len(rank)))

    def _student_predictor(self) -> Callable[[list[str]], list[str]]:
        """The latest kept student's label for documents, each predicted once however often it is asked."""
        student, _ = self.load_student()
        predicted: dict[str, str] = {}

        def labels_of(doc_ids: list[str]) -> list[str]:
            missing = [d for d in doc_ids if d not in predicted]
            if missing:
                found = student.predict_proba(self._student_input(student, missing)).argmax(axis=1)
                predicted.update(zip(missing, (self.labels[i] for i in found), strict=True))
            return [predicted[d] for d in doc_ids]

        return labels_of

    def _student_input(self, student: Student, doc_ids: list[str], texts: list[str] | None = None) -> Any:
        """What `student.predict_proba` reads for these documents: stored vectors, or the texts."""
        if student.input == "embeddings":
            return self.store.vectors(self.vector_key, doc_ids)
        return texts if texts is not None else self.store.texts(doc_ids)

    # -- the check sample: how good a student really is, by people's labels -----------------------------

    def draw_check(self, size: int, seed: int = 0) -> CheckDraw:
        """Grow the check sample to `size` documents, each drawn at random from the pool documents that nothing has
        labelled or asked a teacher about; they leave the pool, so that no run trains on them or selects them. A
        sample already that large draws nothing (it never shrinks). The draw says how much of the pool runs had
        already touched (`CheckDraw.lean`)."""
        have = len(self.store.ids_in_split("check"))
        if size <= have:
            return CheckDraw(0, have)
        rows = self.store.untouched_pool()
        want = size - have
        if want > len(rows):
            raise KdError(f"the check sample holds {have} documents and --size {size} wants {want} more, but only "
                          f"{len(rows)} pool documents are untouched (not labelled, never sent to a teacher)",
                          f"ask for at most --size {have + len(rows)}, or import more documents")
        picked = np.random.default_rng([seed, have]).choice(len(rows), size=want, replace=False)
        touched = self.store.touched_pool_count()
        self.store.move_to_split(sorted(rows[i][0] for i in picked), "check")
        return CheckDraw(want, size, touched, len(rows) + touched)

    def check_report(self, student_id: int | None = None) -> CheckReport:
        """The check sample, and the kept student (default: the best of the latest run) and its run's teacher graded
        on it: the sample alone, and PPI borrowing the teacher's and the student's answers on unchecked documents."""
        truth = check_truth(self.store, GoldLabels(self.store))
        size = len(self.store.ids_in_split("check"))
        if not RunLog(self.store).students() or len(truth.labels) < MIN_CHECKED:
            return CheckReport(size, truth)
        student, record = self.load_student(student_id)
        grades = grade_run_student(self.labels, truth, Ledger(self.store), record["run_id"],
                                   [*self.store.ids_in_split("val"), *truth.unlabelled],
                                   lambda ids: student.predict_proba(self._student_input(student, ids)),
                                   limit=BORROW_LIMIT if student.input == "embeddings" else BORROW_LIMIT_TEXTS)
        run = next(r for r in self.runs() if r.id == record["run_id"])
        return CheckReport(size, truth, grades, record, run.config.get("teacher"))

    # -- browsing and triage (the terminal UI) -----------------------------------------------------------

    def documents(self, filters: Filters | None = None, *, offset: int = 0, size: int = 50) -> Page:
        """One page of the corpus with its current labels; only that page is read."""
        return Browse(self.store).page(filters or Filters(), offset, size)

    def document_text(self, doc_id: str) -> str | None:
        """One document's text, or None when the project holds no such id."""
        return Browse(self.store).document(doc_id)

    def triage_queue(self, order: str = "uncertainty", limit: int = 200) -> list[TriageItem]:
        """Teacher labels no person has checked: least confident first (`uncertainty`), those where the latest
        student disagrees with the teacher (`disagreement`), or most likely wrong first by the audit (`suspect`); each
        with the student's prediction when there is one. `diverse` is the cold start: pool documents nobody has
        labelled, spread over the embedding space (in id order before the project is embedded)."""
        from kdstudio.review import choose

        self.check_label_set()
        ignored = ReviewStore(self.store).ignored()
        if order == "diverse":
            return self._cold_start_queue(min(limit, COLD_START), ignored)
        if order == "check":  # blind: neither the teacher's label nor the student's is shown, so none sways people
            if not self.store.ids_in_split("check"):
                raise KdError("this project has no check sample yet",
                              "draw one for people to label: kdstudio check -p DIR --size 100")
            ids = [d for d in self._unchecked() if d not in ignored][:limit]
            return [TriageItem(d, t, None, None, None) for d, t in zip(ids, self.store.texts(ids), strict=True)]
        candidates = [c for c in ReviewStore(self.store).candidates() if c.doc_id not in ignored]
        student_labels = None
        if RunLog(self.store).students():
            try:
                student_labels = self._student_predictor()
            except StaleStudent:
                if order == "disagreement":
                    raise
                # The queue stands without the student's opinion until a run trains one on these vectors.
        if order == "suspect":
            candidates = self._suspect_order(candidates)
        items = choose(candidates, "disagreement" if order == "disagreement" else "all", limit, 1.0, student_labels)
        labels = student_labels([x.doc_id for x in items]) if student_labels else [None] * len(items)
        return [TriageItem(x.doc_id, x.text, x.label, x.confidence, p) for x, p in zip(items, labels, strict=True)]

    def _cold_start_queue(self, limit: int, ignored: set[str]) -> list[TriageItem]:
        from kdstudio.cold_start import diverse_order

        # A bounded sample, as diversity would take on its own: the queue never reads the whole pool's vectors.
        ids = [d for d, _ in self.store.untouched_pool(at_most=COLD_START_SAMPLE) if d not in ignored]
        key = self.vector_key
        missing = set(self.store.ids_missing_embedding(key))
        if ids and not missing & set(ids):
            humans = [d for d in Ledger(self.store).human_labelled() if d not in missing]
            selector = self.plugins.get("selector", "diversity").cls()
            picked = diverse_order(selector, self.store.vectors(key, ids), self.store.vectors(key, humans),
                                   self.labels, limit)
            ids = [ids[i] for i in picked]
        ids = ids[:limit]
        return [TriageItem(d, t, None, None, None) for d, t in zip(ids, self.store.texts(ids), strict=True)]

    def ignore_document(self, doc_id: str, annotator: str | None = None) -> int:
        """A person passes over a document in Triage (Prodigy's ignore): it leaves the queue for good, recorded with
        their name; returns the record's id for `undo_ignore`."""
        return ReviewStore(self.store).ignore(doc_id, annotator)

    def undo_ignore(self, ignore_id: int) -> None:
        """Take back an ignore: the document returns to the queue."""
        ReviewStore(self.store).unignore(ignore_id)

    def set_label(self, doc_id: str, label: str, annotator: str | None = None) -> int:
        """A person's label, persisted at once; returns its id for `undo_label`."""
        if label not in self.labels:
            raise KdError(f"{label!r} is not in the label set", f"labels: {', '.join(self.labels)}")
        return Ledger(self.store).add_human_label(doc_id, label, annotator)

    def undo_label(self, label_id: int) -> None:
        """Withdraw a label given in the terminal (the triage undo); the history keeps it."""
        Ledger(self.store).remove_human_label(label_id)

    # -- export ----------------------------------------------------------------------------------------

    def export(self, out_dir: str | Path, *, student_id: int | None = None, quantize: str | None = None,
               exporter: str = "onnx", license: str | None = None, language: Sequence[str] = (),
               on_step: Callable[[str], None] | None = None) -> ExportReport:
        """Export a kept student (default: the best of the latest run), check it on the test split against the
        in-process student, and write its model card (with `license`, an SPDX id, and `language`s, ISO codes, in its
        Hugging Face metadata). `on_step` hears each step's name as it starts."""
        from kdstudio.export import export_student

        step = on_step or (lambda _: None)
        step("loading the student")
        student, record = self.load_student(student_id)
        self._check_exportable(record)
        plugin = self.plugins.get("exporter", exporter).cls()
        context = ExportContext(self.labels, self.embedder, quantize)
        gold = GoldLabels(self.store)
        test = self.store.ids_with_gold("test")
        gold.prefetch(test)
        texts = self.store.texts(test)
        step(f"the in-process student's answers on {len(test)} test documents")
        features = self._student_input(student, test, texts)
        y = np.array([self.labels.index(gold[d]) for d in test], dtype=np.int64)
        facts = {**self._card_facts(record["run_id"]), "card": {"license": license, "language": list(language)}}
        return export_student(student, record, plugin, Path(out_dir), context, texts, features, y, facts, step)

    def export_cascade(self, out_dir: str | Path, *, fast_encoder: str = "static", student_id: int | None = None,
                       target_accuracy: float | None = None, defer_below: float | None = None,
                       quantize: str | None = None, exporter: str = "onnx", license: str | None = None,
                       language: Sequence[str] = (), on_build: BuildProgress | None = None) -> CascadeReport:
        """A cascade folder: a student on `fast_encoder`'s vectors, trained on the labels the kept student's run holds,
        answers what it is sure of (threshold chosen on validation for `target_accuracy`, default the kept student's
        own less half a point); the kept student (`quantize`d if asked) answers the rest."""
        from kdstudio.cascade import CascadeInputs, build_cascade, fit_like

        slow, record = self.load_student(student_id)
        self._check_exportable(record)
        fast_encoder_obj = self.encoder_for(EmbeddingSettings(encoder=fast_encoder))
        if fast_encoder_obj.key == self.vector_key:
            raise KdError(f"the kept student already reads {fast_encoder} vectors",
                          "a cascade puts a faster encoder in front: embed with minilm and distill, then "
                          "`kdstudio export --cascade static`")
        embed_missing(self.store, fast_encoder_obj, on_build=on_build, vector_type=self.config.embedding.vector_type)
        train, val, y_of = self._cascade_labels(record["run_id"])
        fast_vectors = lambda ids: self.store.vectors(fast_encoder_obj.key, ids)  # noqa: E731
        run = RunLog(self.store).get(record["run_id"])
        kind, options = (record["kind"], (run.config.get("student_options") or {}) if run else {}) \
            if slow.input == "embeddings" else ("logreg", {})
        with sized_pools():
            fast = fit_like(self.plugins.get("student", kind).cls, options, fast_vectors(train), y_of(train),
                            len(self.labels))
        gold = GoldLabels(self.store)
        test = self.store.ids_with_gold("test")
        gold.prefetch(test)
        val_slow = slow.predict_proba(self._student_input(slow, val))
        inputs = CascadeInputs(fast, slow, ExportContext(self.labels, fast_encoder_obj),
                               ExportContext(self.labels, self.embedder, quantize),
                               fast.predict_proba(fast_vectors(val)), val_slow, y_of(val), self.store.texts(test),
                               np.array([self.labels.index(gold[d]) for d in test], dtype=np.int64),
                               target_accuracy, defer_below)
        lines = self._kept_student_lines(record, len(train))
        card = {"project": self.config.name, "license": license, "language": list(language)}
        return build_cascade(inputs, self.plugins.get("exporter", exporter).cls(), Path(out_dir), lines, card)

    def _kept_student_lines(self, record: dict[str, Any], n_fast_train: int) -> list[str]:
        run = self._card_facts(record["run_id"]).get("run") or {}
        return [f"- student {record['id']} ({record['kind']}, run {record['run_id']}, round {record['round']}), "
                f"trained on {run.get('n_train', '?')} labels, validated on {run.get('n_val', '?')}",
                f"- teacher calls {run.get('calls', 0)}, cost ${run.get('usd', 0.0):.4f}"
                + (" (SIMULATED teacher: gold labels)" if run.get("simulated") else ""),
                f"- the `fast` tier: the same kind of student on the {n_fast_train} training labels of that run, on "
                "the fast encoder's vectors"]

    def _cascade_labels(self, run_id: int) -> tuple[list[str], list[str], Callable[[list[str]], np.ndarray]]:
        """The run's training documents and its validation documents (teacher or human labels), and their classes."""
        held = Ledger(self.store).run_labels(run_id)
        val_split, test_split = set(self.store.ids_in_split("val")), set(self.store.ids_in_split("test"))
        train = sorted(d for d in held if d not in val_split and d not in test_split)
        val = sorted(d for d in held if d in val_split)
        if not val:
            raise KdError(f"run {run_id} holds no validation labels to choose the cascade's threshold on",
                          "distill with a validation split (`kdstudio split -p DIR val=0.1`)")

        def classes(ids: list[str]) -> np.ndarray:
            return np.array([self.labels.index(held[d].label) for d in ids], dtype=np.int64)

        return train, val, classes

    def _check_same_vectors(self, student: Student, record: dict[str, Any]) -> None:
        """A student reads the vectors it learned from, which must still be the project's."""
        if student.input != "embeddings":
            return
        run = RunLog(self.store).get(record["run_id"]) if record.get("run_id") is not None else None
        learned_from = run.config.get("vectors") if run is not None else None
        if learned_from and learned_from != self.vector_key:
            raise StaleStudent(f"student {record['id']} learned from {learned_from} vectors; the project now embeds "
                               f"with {self.vector_key}",
                               "distill again on these vectors, or switch back with `kdstudio embed --encoder ...`")

    @staticmethod
    def _check_exportable(record: dict[str, Any]) -> None:
        # A run that bought nothing keeps no student (RunFailed); this guards folders of older versions too.
        if record["metrics"].get("n_train", 1) == 0:
            raise KdError(f"student {record['id']} was trained on no labels", "distill with a working teacher")

    def _card_facts(self, run_id: int | None) -> dict[str, Any]:
        facts: dict[str, Any] = {"project": self.config.name, "documents": self.store.documents_by_split_source(),
                                 "sources": self.store.import_sources()}
        run = RunLog(self.store).get(run_id) if run_id is not None else None
        if run is None:
            return facts
        done = [r for r in self.rounds(run.id) if r.phase == "done"]
        spent = [row for row in self.cost() if row.run_id == run.id]
        config = run.config
        facts["teacher"] = ", ".join(sorted({row.model for row in spent})) or config.get("teacher", "?")
        facts["run"] = {
            "id": run.id, "simulated": run.simulated, "selector": config.get("selector"),
            "student_options": config.get("student_options"),
            "n_selected": done[-1].metrics.get("n_selected") if done else 0,
            "n_train": done[-1].n_labels if done else 0,
            "n_val": Ledger(self.store).run_val_labels(run.id),
            "human_labels": sum(1 for x in Ledger(self.store).run_labels(run.id).values() if x.source == "human"),
            "generated": sum(r.metrics.get("generated", 0) for r in done),
            "calls": sum(row.calls for row in spent), "usd": sum(row.usd for row in spent),
            "reused": sum(row.reused for row in spent),
            "teacher_accuracy": done[-1].metrics.get("teacher_accuracy") if done else None,
        }
        return facts

    # -- reporting -----------------------------------------------------------------------------------

    def corpus_counts(self) -> CorpusCounts:
        """The counts over the whole corpus that `status` shows."""
        s = self.store
        return CorpusCounts(s.documents_by_split_source(), s.gold_distribution(), s.embedding_coverage(),
                            check_truth(s, GoldLabels(s)).counts(len(s.ids_in_split("check"))))

    def status(self, corpus: CorpusCounts | None = None) -> Status:
        """Documents, labels, embeddings, spend and runs: what `kdstudio status` shows (with the corpus's counts
        given, when the caller knows they have not changed)."""
        s = self.store
        corpus = corpus or self.corpus_counts()
        usd, calls, errors = s.spend()
        return Status(
            name=self.config.name,
            labels=self.labels,
            documents=corpus.documents,
            labels_by_source=s.label_counts_by_source(),
            label_distribution=s.current_label_distribution(),
            gold_distribution=corpus.gold_distribution,
            embeddings=corpus.embeddings,
            vectors_in_use=self.vector_key,
            spend_usd=usd,
            teacher_calls=calls,
            teacher_errors=errors,
            runs=self.runs(),
            check=corpus.check,
        )


def _human_rows(labels: Sequence[HumanLabel]) -> list[tuple[str, str, str | None, Any, str]]:
    """People's labels as ReviewStore.add_human_labels takes them."""
    return [(x.doc_id, x.label, x.annotator, x.annotated_at, x.ref) for x in labels]
