"""Learning curves as an image: test accuracy (against gold labels) and validation agreement (with the teacher's labels)
by the labels bought and by the USD spent, one colour per run, the teacher's own accuracy as a dashed reference."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.errors import KdError
from kdstudio.types import RoundRow, RunRow

FORMATS = (".png", ".svg", ".pdf")


@dataclass
class Curve:
    name: str  # the legend's words for the run
    labels: list[int]
    usd: list[float]
    test: list[float | None]
    val: list[float | None]
    teacher: float | None  # the teacher's accuracy on the labels it sold, at the last round
    # The student's accuracy on the check sample with its 95% interval (value, low, high), where one was measured.
    check: list[tuple[float, float, float] | None] = field(default_factory=list)


def curve_of(run: RunRow, rounds: list[RoundRow]) -> Curve:
    done = [r for r in rounds if r.phase == "done"]
    config = run.config
    model = config.get("teacher_options", {}).get("model")
    teacher = f"{config.get('teacher')}{f' {model}' if model else ''}{' (simulated)' if run.simulated else ''}"
    teacher += f", right on {right:.1%} of its labels" if (right := _teacher(done)) is not None else ""
    return Curve(f"run {run.id}: {config.get('selector')} / {config.get('student')} / {teacher}",
                 [r.bought for r in done], [r.cost_usd or 0.0 for r in done],
                 [r.metrics.get("test", {}).get("accuracy") for r in done],
                 [r.metrics.get("val", {}).get("accuracy") for r in done], _teacher(done),
                 [_checked(r.metrics.get("check")) for r in done])


def _checked(check: dict | None) -> tuple[float, float, float] | None:
    if not check:
        return None
    e = check["student_accuracy"]
    return e["value"], e["low"], e["high"]


def _teacher(done: list[RoundRow]) -> float | None:
    known = [r.metrics["teacher_accuracy"] for r in done if r.metrics.get("teacher_accuracy") is not None]
    return known[-1] if known else None


def write_plot(curves: list[Curve], path: Path, title: str) -> Path:
    """Draw `curves` into `path` (.png, .svg or .pdf), written beside and renamed in, so that a kill leaves the old
    file or the new one, never half of one."""
    if path.suffix.lower() not in FORMATS:
        raise KdError(f"{path}: a plot is written as {', '.join(FORMATS)}", f"name it e.g. {path.with_suffix('.png')}")
    if not any(c.labels for c in curves):
        raise KdError("no finished round to plot yet", "run `kdstudio distill` first")
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    from matplotlib import pyplot as plt

    paid = any(u > 0 for c in curves for u in c.usd)
    fig, axes = plt.subplots(1, 2 if paid else 1, figsize=(13 if paid else 8, 5 + 0.25 * len(curves)),
                             squeeze=False, layout="constrained")
    for ax, (x_of, xlabel) in zip(axes[0], [(lambda c: c.labels, "teacher labels bought"),
                                           (lambda c: c.usd, "USD spent on the teacher")], strict=False):
        _panel(ax, curves, x_of, xlabel, plt.rcParams["axes.prop_cycle"].by_key()["color"])
    fig.suptitle(title + ("" if paid else "  (a free teacher: no USD axis)"))
    # Under the panels, where it hides no curve: a colour per run, a line style per quantity.
    from matplotlib.lines import Line2D

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    runs = [Line2D([], [], color=colours[i % len(colours)], marker="o", markersize=3, label=c.name)
            for i, c in enumerate(curves)]
    styles = [Line2D([], [], color="black", linestyle=style, label=what) for style, what in
              (("-", "test accuracy (gold labels)"), (":", "validation agreement with the teacher's labels"),
               ("--", "the teacher's accuracy on the labels it sold"))]
    if any(point for c in curves for point in c.check):
        styles.append(Line2D([], [], color="black", marker="s", linestyle="none",
                             label="accuracy on the check sample (its reference labels), 95% interval"))
    fig.legend(handles=runs + styles, loc="outside lower center", ncol=2, fontsize="small")
    tmp = path.with_name(f".{path.name}.writing")
    try:
        fig.savefig(tmp, dpi=110, format=path.suffix.lower().lstrip("."))
        os.replace(tmp, path)
    except OSError as exc:
        raise KdError(f"could not write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def _panel(ax: Any, curves: list[Curve], x_of: Callable[[Curve], list], xlabel: str, colours: list[str]) -> None:
    for i, curve in enumerate(curves):
        colour = colours[i % len(colours)]  # one colour per run, in both panels
        x = x_of(curve)
        ax.plot(x, _nan(curve.test), "-o", color=colour, markersize=3)
        ax.plot(x, _nan(curve.val), ":", color=colour)
        if curve.teacher is not None:
            ax.axhline(curve.teacher, color=colour, linestyle="--", linewidth=1)
        checked = [(xi, p) for xi, p in zip(x, curve.check, strict=False) if p is not None]
        if checked:
            values = np.array([p for _, p in checked])
            ax.errorbar([xi for xi, _ in checked], values[:, 0],
                        yerr=[values[:, 0] - values[:, 1], values[:, 2] - values[:, 0]], fmt="s", color=colour,
                        markersize=3, capsize=2, linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (agreement for validation)")
    ax.grid(alpha=0.3)


def _nan(values: list[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]
