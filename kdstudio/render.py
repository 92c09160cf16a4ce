"""Rich renderings of façade results for the command line."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from kdstudio.plugins import Plugins
from kdstudio.project import Status

KIND_TITLES = {
    "selector": "Selectors", "teacher": "Teachers", "student": "Students", "exporter": "Exporters",
    "review_backend": "Review backends", "dataset": "Datasets",
}


def status_view(status: Status) -> Group:
    docs = Table(title=f"Project {status.name}: {status.total_documents} documents", title_justify="left")
    for column in ("split", "source", "documents"):
        docs.add_column(column, justify="right" if column == "documents" else "left")
    for split, source, n in status.documents:
        docs.add_row(split, source, str(n))

    labels = Table(title="Labels", title_justify="left")
    labels.add_column("label")
    labels.add_column("gold (pool/val/test)", justify="right")
    labels.add_column("labelled", justify="right")
    gold: dict[str, dict[str, int]] = {}
    for label, split, n in status.gold_distribution:
        gold.setdefault(label, {})[split] = n
    current = dict(status.label_distribution)
    for label in status.labels:
        g = gold.get(label, {})
        labels.add_row(label, "/".join(str(g.get(s, 0)) for s in ("pool", "val", "test")),
                       str(current.get(label, 0)))

    by_source = ", ".join(f"{source} {n}" for source, n in status.labels_by_source) or "none yet"
    coverage = Table(title="Embeddings", title_justify="left")
    for column in ("model", "documents", "coverage", "dim"):
        coverage.add_column(column)
    for model, n, dim in status.embeddings:
        share = f"{100 * n / status.total_documents:.1f}%" if status.total_documents else "-"
        coverage.add_row(model, str(n), share, str(dim))
    if not status.embeddings:
        coverage.add_row("none yet (run `kdstudio embed`)", "0", "0%", "-")
    money = (f"Teacher labels by source: {by_source}\n"
             f"Spent: ${status.spend_usd:.4f} on {status.teacher_calls} teacher calls "
             f"({status.teacher_errors} failed)")
    return Group(docs, labels, coverage, money)


def plugins_view(plugins: Plugins) -> Group:
    parts: list = []
    for kind, title in KIND_TITLES.items():
        registered = plugins.registered(kind)
        table = Table(title=f"{title} ({len(registered)})", title_justify="left", expand=True)
        table.add_column("name", no_wrap=True)
        table.add_column("what it does", ratio=3)
        table.add_column("options", ratio=2)
        table.add_column("from", no_wrap=True)
        for name, reg in sorted(registered.items()):
            options = "\n".join(o.describe() for o in reg.cls.options) or "-"
            table.add_row(name, reg.cls.summary(), options, reg.distribution)
        if not registered:
            table.add_row("-", "none registered", "", "")
        parts.append(table)
    for error in plugins.errors:
        parts.append(f"[red]plugin {error.plugin} ({error.distribution}) failed to load and was skipped: "
                     f"{error.error}[/red]")
    return Group(*parts)
