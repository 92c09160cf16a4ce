"""The Dashboard tab: the project's figures and the latest run's learning curve."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static
from textual_plotext import PlotextPlot

from kdstudio.errors import KdError
from kdstudio.money import usd
from kdstudio.render import kept_warning
from kdstudio.terminal import shown
from kdstudio.tui.pane import Pane
from kdstudio.types import RoundRow, RunRow


class Dashboard(Pane):
    def compose(self) -> ComposeResult:
        yield Static(id="dashboard-stats")
        yield PlotextPlot(id="curve")

    def refresh_data(self) -> None:
        status = self.project.status()
        docs = ", ".join(f"{split}/{source} {n}" for split, source, n in status.documents) or "none"
        labels = ", ".join(f"{label} {n}" for label, n in status.label_distribution) or "none yet"
        by_source = ", ".join(f"{source} {n}" for source, n in status.labels_by_source) or "none yet"
        run = status.runs[-1] if status.runs else None
        rounds = [r for r in self.project.rounds(run.id) if r.phase == "done"] if run else []
        self.query_one("#dashboard-stats", Static).update(Text.assemble(
            (shown(status.name), "bold"), f"  {status.total_documents} documents: {docs}\n"
            f"labels: {shown(labels)}  (by source: {by_source})\n"
            f"spent {usd(status.spend_usd)} on {status.teacher_calls} teacher calls ({status.teacher_errors} failed);"
            f" {len(status.runs)} runs", *self._checked(status.check["size"]), *self._warned(run, rounds)))
        plot = self.query_one("#curve", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        if rounds:
            x = [r.bought for r in rounds]
            for split, what in (("test", "test accuracy (gold)"), ("val", "val agreement with the teacher")):
                y = [r.metrics.get(split, {}).get("accuracy") for r in rounds]
                if all(v is not None for v in y):
                    plt.plot(x, y, label=what, marker="dot")
            checked = [(r.bought, r.metrics["check"]["student_accuracy"]["value"]) for r in rounds
                       if r.metrics.get("check")]
            if checked:
                plt.scatter([a for a, _ in checked], [v for _, v in checked], label="check sample accuracy",
                            marker="x")
            plt.title(f"run {run.id}: {run.config.get('selector')} / {run.config.get('student')} / "
                      f"{run.config.get('teacher')}{' (SIMULATED)' if run.simulated else ''}")
            plt.xlabel("labels")
        else:
            plt.title("no run yet: start one in Distill (F5), or label in Triage (F4)")
        plot.refresh()

    @staticmethod
    def _warned(run: RunRow | None, rounds: list[RoundRow]) -> tuple[tuple[str, str], ...]:
        """The latest run's kept student, where its trusted labels cannot tell it from a guess: said here too, so
        that a figure on this tab never reads as a result it is not."""
        kept = run.kept(rounds) if run else None
        warned = kept and kept_warning(kept.metrics)
        return ((f"\nwarning: run {run.id}: {warned}", "yellow"),) if run and warned else ()

    def _checked(self, size: int) -> tuple[str, ...]:
        """The student's accuracy on the check sample with its interval: the figure that does not rest on the
        teacher it copies."""
        if not size:
            return ("\nno check sample: `kdstudio check --size 100` draws one for people to label",)
        try:
            report = self.project.check_report()
        except KdError as exc:
            return (f"\ncheck sample of {size}: {shown(exc.message)}",)
        if report.grades is None:
            return (f"\ncheck sample of {size}: {len(report.truth.labels)} labelled; label {report.needed} more "
                    "(Triage, order check) for an estimate" if report.needed else
                    f"\ncheck sample of {size}: no student to grade yet",)
        best = report.grades.best_accuracy
        return (f"\nstudent accuracy on the check sample ({best.truth}, {best.n} labels): {best.value:.3f} "
                f"[{best.low:.3f}, {best.high:.3f}] 95%",)
