"""Do the check sample's intervals tell the truth, and how much does PPI buy? Repeated draws on real corpora.

    .venv/bin/python benchmarks/check_estimates.py                               # three corpora, two teachers
    .venv/bin/python benchmarks/check_estimates.py --datasets bbc-news --draws 200   # a quick look

Per corpus and teacher: a student is distilled from the teacher (a real run, 200 labels, margin), then the documents
it never saw (the rest of the pool) are its population, with gold labels standing in for people. The student's true
accuracy there is known. Then, many times over: n documents are drawn as the check sample (n = 50, 100, 200) and N
others as the teacher-labelled validation documents PPI borrows from; the sample's Wilson interval and PPI++'s are
computed exactly as `kdstudio check` computes them. Printed: how often each 95% interval holds the true accuracy
(coverage, the target is at least 0.93), their mean widths, and how much narrower PPI's is. Teachers: simulated with
difficulty noise 0.2 (wrong mostly on hard documents) and the real offline zero-shot teacher. Encoder: the static one
(fast enough to embed whole corpora here; the estimators do not depend on it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.estimates import ppi_mean, wilson
from kdstudio.interfaces import Doc
from kdstudio.loop import DistillConfig
from kdstudio.plugins import get_plugins
from kdstudio.project import Project
from kdstudio.steps import teach_context
from kdstudio.store import Ledger

OUT = Path("benchmarks/out")
TEACHERS: dict[str, tuple[str, dict[str, Any]]] = {
    "difficulty-20": ("oracle", {"noise": 0.2, "noise_mode": "difficulty"}),
    "zeroshot": ("zeroshot", {}),
}
SIZES = (50, 100, 200)
BORROWED = 1000  # teacher-labelled validation documents PPI borrows from


def project_for(dataset: str) -> Project:
    directory = OUT / "check-projects" / dataset
    if Project.exists(directory):
        return Project.open(directory)
    project, report = Project.from_dataset(dataset, directory)
    print(f"  {report.summary()}", flush=True)
    started = time.perf_counter()
    project.embed(encoder="static")
    print(f"  embedded with the static encoder in {time.perf_counter() - started:.0f}s", flush=True)
    return project


def teacher_labels(project: Project, teacher: str, ids: list[str]) -> np.ndarray:
    """The teacher's answer for every document, asked directly (both teachers here are free)."""
    name, options = TEACHERS[teacher]
    plugin = get_plugins().get("teacher", name).cls(**options)
    gold = project.store.gold()
    context = teach_context(Ledger(project.store), plugin, 0, project.labels,
                            {x.name: x.description for x in project.config.labels}, gold,
                            vectors=lambda d: project.store.vectors(project.vector_key, d),
                            encode=project.embedder.encode, embedding_model=project.vector_key)
    answers = {a.doc_id: a.label for a in plugin.label(
        [Doc(d, t) for d, t in zip(ids, project.store.texts(ids), strict=True)], context)}
    return np.array([answers.get(d) for d in ids], dtype=object)


def measure(project: Project, dataset: str, teacher: str, draws: int, seed: int) -> dict[str, Any]:
    name, options = TEACHERS[teacher]
    result = project.distill(DistillConfig(teacher=name, teacher_options=options, selector="margin", seed_size=20,
                                           batch=20, budget_labels=200, val_limit=50, seed=seed))
    student, _ = project.load_student()
    trained = {s["id"] for r in project.rounds(result.run_id) for s in (r.selected or [])}
    gold = project.store.gold()
    ids = [d for d in project.store.ids_in_split("pool") if d not in trained and d in gold]
    predicted = np.array(project.labels)[student.predict_proba(
        project.store.vectors(project.vector_key, ids)).argmax(axis=1)]
    truth = np.array([gold[d] for d in ids])
    said = teacher_labels(project, teacher, ids)
    right, agrees = predicted == truth, predicted == said
    true_accuracy = float(right.mean())
    rng = np.random.default_rng(seed)
    rows = {}
    for n in SIZES:
        hits = {"sample": 0, "ppi": 0}
        widths: dict[str, list[float]] = {"sample": [], "ppi": []}
        for _ in range(draws):
            chosen = rng.choice(len(ids), n + BORROWED, replace=False)
            checked, borrowed = chosen[:n], chosen[n:]
            alone = wilson(int(right[checked].sum()), n, "gold")
            ppi = ppi_mean(right[checked], agrees[checked], agrees[borrowed], "gold")
            for key, estimate in (("sample", alone), ("ppi", ppi)):
                hits[key] += estimate.covers(true_accuracy)
                widths[key].append(estimate.width)
        rows[n] = {"coverage_sample": hits["sample"] / draws, "coverage_ppi": hits["ppi"] / draws,
                   "width_sample": float(np.mean(widths["sample"])), "width_ppi": float(np.mean(widths["ppi"])),
                   "narrower": 1 - float(np.mean(widths["ppi"]) / np.mean(widths["sample"]))}
    return {"dataset": dataset, "teacher": teacher, "population": len(ids), "student_accuracy": true_accuracy,
            "teacher_accuracy": float(np.mean(said == truth)), "agreement": float(agrees.mean()), "draws": draws,
            "sizes": rows}


def print_result(r: dict[str, Any]) -> None:
    print(f"\n{r['dataset']}, teacher {r['teacher']}: population {r['population']} documents the student never saw; "
          f"student accuracy {r['student_accuracy']:.3f} (gold), teacher {r['teacher_accuracy']:.3f}, "
          f"student-teacher agreement {r['agreement']:.3f}; {r['draws']} draws, PPI borrows {BORROWED}")
    print("    n   coverage: sample  PPI    width: sample  PPI    PPI narrower by")
    for n, row in r["sizes"].items():
        print(f"  {int(n):>4}             {row['coverage_sample']:.3f}  {row['coverage_ppi']:.3f}          "
              f"{row['width_sample']:.3f}  {row['width_ppi']:.3f}    {row['narrower']:+.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["bbc-news", "reuters-r8", "20newsgroups"])
    parser.add_argument("--teachers", nargs="+", default=list(TEACHERS))
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for dataset in args.datasets:
        print(f"{dataset}:", flush=True)
        with project_for(dataset) as project:
            for teacher in args.teachers:
                results.append(measure(project, dataset, teacher, args.draws, args.seed))
                print_result(results[-1])
                sys.stdout.flush()
    path = OUT / f"check-estimates-{int(time.time())}.json"
    path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
