"""The offline zero-shot teacher (the demo's): how often it is right, how well its probabilities are calibrated,
and what a student distilled from it reaches next to one distilled from gold (the simulated oracle).

    .venv/bin/python benchmarks/zeroshot_teacher.py                       # bbc-news and reuters-r8, ~5 minutes
    .venv/bin/python benchmarks/zeroshot_teacher.py --datasets bbc-news
    .venv/bin/python benchmarks/zeroshot_teacher.py --people 0,20,50 --datasets bbc-news,reuters-r8,20newsgroups \
        --encoder static

--people: the teacher's accuracy when N of the pool's documents carry people's labels (drawn at random, their gold
label given as a person's), used as prototypes beside the descriptions; three draws each, on the other documents.

Uses the embedded projects that benchmarks/learning_curves.py keeps in benchmarks/out/projects (or builds them),
copied so that the runs here do not touch them. JSON goes to benchmarks/out/zeroshot_teacher.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from kdstudio.config import Label
from kdstudio.evaluation import expected_calibration_error
from kdstudio.interfaces import Doc, TeachContext
from kdstudio.loop import DistillConfig
from kdstudio.plugins import get_plugins
from kdstudio.project import Project

OUT = Path("benchmarks/out")


def teacher_quality(project: Project, calibration: int) -> dict[str, float]:
    ids = project.store.ids_in_split("pool", source="imported")
    gold = project.store.gold(ids)
    ids = [d for d in ids if d in gold]
    row_ids, matrix = project.store.embedding_matrix(project.config.embedding.model)
    row = {d: i for i, d in enumerate(row_ids)}

    def vectors(doc_ids: list[str]) -> np.ndarray:
        return matrix[[row[d] for d in doc_ids]]

    descriptions = {label.name: label.description for label in project.config.labels}
    cls = get_plugins().get("teacher", "zeroshot").cls
    docs = [Doc(d, "") for d in ids]
    labels = project.labels
    y = np.array([labels.index(gold[d]) for d in ids])
    rng = np.random.default_rng(0)
    held = rng.permutation(len(ids))
    fit_ids, eval_pos = held[:calibration], held[calibration:]
    examples = [(ids[i], "", gold[ids[i]]) for i in fit_ids]
    out: dict[str, float] = {"documents": float(len(eval_pos))}
    for name, template, context_examples in (
        ("names only", "{name}", []),
        ("descriptions", "{description}", []),
        (f"descriptions, calibrated on {calibration}", "{description}", examples),
    ):
        teacher = cls(template=template)
        context = TeachContext(labels, descriptions, vectors=vectors, encode=project.embedder.encode,
                               examples=context_examples)
        answers = {a.doc_id: a for a in teacher.label([docs[i] for i in eval_pos], context)}
        probs = np.array([[answers[ids[i]].probs[x] for x in labels] for i in eval_pos])
        yy = y[eval_pos]
        out[f"{name}: accuracy"] = float((probs.argmax(1) == yy).mean())
        out[f"{name}: ECE"] = expected_calibration_error(yy, probs)
        out[f"{name}: log loss"] = float(-np.log(np.clip(probs[np.arange(len(yy)), yy], 1e-12, None)).mean())
        out[f"{name}: mean confidence"] = float(probs.max(1).mean())
    return out


def with_people(project: Project, counts: list[int], draws: int = 3) -> dict[str, list[float]]:
    """Accuracy of the zero-shot teacher (descriptions) with N people's labels as prototypes, per draw, on the pool
    documents outside every draw's people."""
    ids = project.store.ids_in_split("pool", source="imported")
    gold = project.store.gold(ids)
    ids = [d for d in ids if d in gold]
    row_ids, matrix = project.store.embedding_matrix(project.vector_key)
    row = {d: i for i, d in enumerate(row_ids)}
    descriptions = {label.name: label.description for label in project.config.labels}
    cls = get_plugins().get("teacher", "zeroshot").cls
    out: dict[str, list[float]] = {}
    for draw in range(draws):
        order = np.random.default_rng(draw).permutation(len(ids))
        held = [ids[i] for i in order[max(counts):]]  # the same documents graded at every N
        for n in counts:
            people = [(ids[i], gold[ids[i]]) for i in order[:n]]
            context = TeachContext(project.labels, descriptions, vectors=lambda d: matrix[[row[x] for x in d]],
                                   encode=project.embedder.encode, people=people)
            answers = {a.doc_id: a.label for a in cls().label([Doc(d, "") for d in held], context)}
            out.setdefault(str(n), []).append(float(np.mean([answers[d] == gold[d] for d in held])))
    return out


def people_table(datasets: list[str], encoder: str, counts: list[int]) -> None:
    print(f"zero-shot teacher accuracy with people's labels as prototypes ({encoder} vectors; mean of 3 draws, "
          "min-max):")
    report = {}
    for dataset in datasets:
        source = OUT / "zeroshot-people" / f"{dataset}-{encoder}"
        if not Project.exists(source):
            project, _ = Project.from_dataset(dataset, source)
            with project:
                project.embed(encoder=encoder)
        with Project.open(source) as project:
            report[dataset] = runs = with_people(project, counts)
        cells = [f"{n}: {np.mean(a):.3f} ({min(a):.3f}-{max(a):.3f})" for n, a in runs.items()]
        print(f"  {dataset:<14} " + "   ".join(cells), flush=True)
    (OUT / f"zeroshot_people_{encoder}.json").write_text(json.dumps(report, indent=2))


def distilled(project: Project, teacher: str, budget: int) -> dict[str, float]:
    result = project.distill(DistillConfig(teacher=teacher, selector="margin", student="logreg",
                                           budget_labels=budget, seed=0))
    best, last = result.best, result.rounds[-1]
    assert best is not None, "a finished run keeps a round"
    return {"test accuracy (best round)": best.metrics["test"]["accuracy"],
            "test accuracy (last round)": last.metrics["test"]["accuracy"],
            "teacher accuracy on what it labelled": last.metrics.get("teacher_accuracy", float("nan"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="bbc-news,reuters-r8")
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--calibration", type=int, default=200)
    parser.add_argument("--people", default="", help="comma-separated numbers of people's labels, e.g. 0,20,50")
    parser.add_argument("--encoder", default="minilm", help="--people: the encoder of the projects it builds")
    args = parser.parse_args()
    if args.people:
        people_table(args.datasets.split(","), args.encoder, [int(n) for n in args.people.split(",")])
        return
    report = {}
    for dataset in args.datasets.split(","):
        source = OUT / "projects" / dataset
        if not Project.exists(source):
            project, _ = Project.from_dataset(dataset, source)
            with project:
                project.embed()
        work = OUT / "zeroshot" / dataset
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(source, work, ignore=shutil.ignore_patterns("students"))
        with Project.open(work) as project:
            # Projects built before datasets carried label descriptions get them now.
            descriptions = get_plugins().get("dataset", dataset).cls.descriptions
            project.config.labels = [Label(x.name, x.description or descriptions.get(x.name, ""))
                                     for x in project.config.labels]
            project.config.save(work)
            print(f"== {dataset}")
            quality = teacher_quality(project, args.calibration)
            for key, value in quality.items():
                print(f"  {key:<48} {value:.3f}")
            runs = {teacher: distilled(project, teacher, args.budget) for teacher in ("zeroshot", "oracle")}
            for teacher, values in runs.items():
                for key, value in values.items():
                    print(f"  student from {teacher:<8} {key:<36} {value:.3f}")
            report[dataset] = {"teacher": quality, "students": runs}
    (OUT / "zeroshot_teacher.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
