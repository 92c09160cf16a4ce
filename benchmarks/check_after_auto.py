"""Does the check sample still tell the truth about a student that `--method auto` chose? Paired runs on real corpora.

    .venv/bin/python benchmarks/check_after_auto.py                          # three corpora, 20 seeds
    .venv/bin/python benchmarks/check_after_auto.py --datasets bbc-news --seeds 5   # a quick look
    .venv/bin/python benchmarks/check_after_auto.py --user                   # no gold validation labels

`auto` judges its recipes on the check sample's labels (and gold validation labels), and the check sample then grades
the student it kept: a figure chosen on the labels that grade it reads high. Per corpus and seed, a fresh project
draws a check sample of 100 documents before any run (gold labels stand in for people), then two runs distill from
the same simulated teacher (difficulty noise 0.2 with LLM-like confidences, as in method_matrix.py; 200 labels,
margin, 50 validation labels): one with `--method auto`, one fixed. For a student, "check minus test" is its accuracy
on the check sample less its accuracy on the corpus's gold test split. The fixed run's student was never chosen on the
check sample, so its figure is the yardstick (the test split and the check sample can differ as populations, which
cancels in the pair). Printed: auto's figure minus the fixed run's, paired by corpus and seed, with its standard
error, for four students of the auto run: the round it keeps (since 2026-12-05: the latest round unless an earlier one
is clearly right more often on the gold validation labels, a sign test, never on the check sample), the round most right
on those gold labels (a rule tried on 2026-12-05 and not shipped), the round it kept before (most right on every trusted
label, the check sample's included), and its last round; all computed from the same run's rounds. A second table gives
what each rule costs: the auto run's gold test accuracy for each of the four. With `--user`, as in a user's project:
the runs' referee sees the check sample alone (the gold validation labels hidden from it), so auto keeps its latest
round (since 2026-12-05); "most right on gold" does not exist, and "lowest val loss" (against the teacher's labels, the
rule before) takes its place. Encoder: the static one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio import method_auto
from kdstudio.loop import DistillConfig
from kdstudio.method_auto import kept_on, trusted_choice
from kdstudio.project import Project

OUT = Path("benchmarks/out")
TEACHER = {"noise": 0.2, "noise_mode": "difficulty", "confidence_signal": 0.4, "runner_up_right": 0.5}
CHECK = 100
POLICIES = ("kept now", "most right on gold", "lowest val loss", "kept before", "last round")


def base_project(dataset: str) -> Path:
    """The corpus imported and embedded once; every run works on a copy."""
    directory = OUT / "check-after-auto" / f"base-{dataset}"
    if not Project.exists(directory):
        project, report = Project.from_dataset(dataset, directory)
        print(f"  {report.summary()}", flush=True)
        project.embed(encoder="static")
        project.close()
    return directory


def optimism(record: Any) -> float:
    """A round's check-sample accuracy less its gold test accuracy."""
    return record.metrics["check"]["student_accuracy"]["value"] - record.metrics["test"]["accuracy"]


def test_accuracy(record: Any) -> float:
    return record.metrics["test"]["accuracy"]


@contextlib.contextmanager
def without_gold_validation(hidden: bool) -> Iterator[None]:
    """A user's project, where `hidden`: the run's referee (what auto judges on, what calibrates fused labels) sees the
    check sample alone, not the corpus's gold validation labels. The simulated teacher still reads gold to make its
    answers, and the test split's gold still grades."""
    if not hidden:
        yield
        return
    real = method_auto.referee
    method_auto.referee = lambda check, by_people, gold, *rest: real(check, by_people, {}, *rest)
    try:
        yield
    finally:
        method_auto.referee = real


def pair(dataset: str, seed: int, base: Path, user: bool) -> dict[str, float]:
    """One seed: the auto run's students and the fixed run's kept one, each as check minus test."""
    figures: dict[str, float] = {}
    for method in ("auto", "fixed"):
        directory = OUT / "check-after-auto" / f"{dataset}-{seed}-{method}{'-user' if user else ''}"
        shutil.rmtree(directory, ignore_errors=True)
        shutil.copytree(base, directory)
        with Project.open(directory) as project, without_gold_validation(user):
            project.draw_check(CHECK, seed=seed)
            result = project.distill(DistillConfig(
                teacher="oracle", teacher_options=TEACHER, selector="margin", seed_size=20, batch=20,
                budget_labels=200, val_limit=50, seed=seed, method=method, accept_guessing_teacher=True))
            rounds = [r for r in project.rounds(result.run_id) if r.phase == "done" and "check" in r.metrics]
            kept = next(r for r in rounds if r.round == result.best_round)
            if method == "fixed":
                figures["fixed"] = optimism(kept)
            else:
                students = {"kept now": kept,
                            "kept before": min(rounds, key=lambda r: (-trusted_choice(r.metrics)["accuracy"],
                                                                      -r.n_labels)),
                            "last round": rounds[-1]}
                if user:  # the referee held the check sample's labels alone
                    assert all(r.metrics["auto"]["n"] == CHECK and kept_on(r.metrics) is None for r in rounds)
                    students["lowest val loss"] = min(rounds, key=lambda r: (r.metrics["val"]["log_loss"], r.round))
                else:
                    students["most right on gold"] = min(rounds, key=lambda r: (-kept_on(r.metrics)["accuracy"],
                                                                                -r.n_labels))
                figures.update({name: optimism(r) for name, r in students.items()})
                figures.update({f"test {name}": test_accuracy(r) for name, r in students.items()})
        shutil.rmtree(directory, ignore_errors=True)
    return figures


def mean_se(gaps: np.ndarray, width: int) -> str:
    """Paired differences as their mean and its standard error."""
    se = gaps.std(ddof=1) / np.sqrt(len(gaps)) if len(gaps) > 1 else float("nan")
    return f"{gaps.mean():+{width}.2f} (se {se:4.2f})"


def report(rows: list[dict[str, Any]], datasets: list[str]) -> None:
    policies = [p for p in POLICIES if p in rows[0]]
    print("\nauto's check-minus-test less the fixed run's, paired by corpus and seed (points; + reads high)")
    print(f"  {'corpus':<14}{'pairs':>6}" + "".join(f"{p:>22}" for p in policies))
    for name in [*datasets, "all"]:
        chosen = [r for r in rows if name in ("all", r["dataset"])]
        cells = []
        for policy in policies:
            cells.append(mean_se(100 * np.array([r[policy] - r["fixed"] for r in chosen]), 8))
        print(f"  {name:<14}{len(chosen):>6}" + "".join(f"{c:>22}" for c in cells))
    print("\nwhat the rule costs: the auto run's gold test accuracy of each student"
          " (mean for kept now; the others as paired difference)")
    print(f"  {'corpus':<14}{'pairs':>6}" + "".join(f"{p:>22}" for p in policies))
    for name in [*datasets, "all"]:
        chosen = [r for r in rows if name in ("all", r["dataset"])]
        now = np.array([r["test kept now"] for r in chosen])
        cells = [f"{now.mean():.3f}"]
        for policy in policies[1:]:
            cells.append(mean_se(100 * (np.array([r[f"test {policy}"] for r in chosen]) - now), 6))
        print(f"  {name:<14}{len(chosen):>6}" + "".join(f"{c:>22}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["bbc-news", "reuters-r8", "20newsgroups"])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--user", action="store_true",
                        help="as a user's project: the runs see no gold validation labels, the check sample alone")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for dataset in args.datasets:
        base = base_project(dataset)
        for seed in range(args.seeds):
            rows.append({"dataset": dataset, "seed": seed, **pair(dataset, seed, base, args.user)})
            print(f"  {dataset} seed {seed}: " + ", ".join(f"{k} {v:+.3f}" for k, v in rows[-1].items()
                                                           if k in (*POLICIES, "fixed")),
                  flush=True)
    report(rows, args.datasets)
    print(f"\n{len(rows) * 2} runs in {time.perf_counter() - started:.0f} s")
    path = OUT / f"check-after-auto{'-user' if args.user else ''}-{int(time.time())}.json"
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
