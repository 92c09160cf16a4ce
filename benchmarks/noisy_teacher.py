"""Distilling from a teacher that is wrong: simulated noisy teachers and the real zero-shot teacher, through the real
loop, with every selector and with and without training that doubts its labels; then the audit's precision.

    .venv/bin/python benchmarks/noisy_teacher.py                                   # all three datasets, 3 seeds
    .venv/bin/python benchmarks/noisy_teacher.py --datasets reuters-r8 --seeds 1   # a quick look
    .venv/bin/python benchmarks/noisy_teacher.py --report benchmarks/out/noisy-*.json   # reprint the tables

Every setup buys the same number of teacher labels (training + validation), so test accuracy is compared at equal
teacher calls. Per dataset and teacher it prints the student's final test accuracy against gold (mean and std over
the seeds), the teacher's accuracy on the labels it sold, the student's accuracy over the teacher's own accuracy on
the test split, and the audit's top-10% precision, lift and errors fixed per 100 reviews against random order.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from learning_curves import OUT, project_for

from kdstudio.audit import audit_labels
from kdstudio.interfaces import Doc, TeachContext
from kdstudio.loop import DistillConfig
from kdstudio.plugins import get_plugins
from kdstudio.project import Project
from kdstudio.store import Ledger
from kdstudio.store.review import Candidate

TEACHERS: dict[str, tuple[str, dict[str, Any]]] = {
    "perfect": ("oracle", {}),
    "confusion-20": ("oracle", {"noise": 0.2, "noise_mode": "confusion"}),
    "difficulty-20": ("oracle", {"noise": 0.2, "noise_mode": "difficulty"}),
    "zeroshot": ("zeroshot", {}),
}
# (selector, its options, doubt, soft labels)
SETUPS: dict[str, tuple[str, dict[str, Any], str | None, bool]] = {
    "random": ("random", {}, None, False),
    "margin": ("margin", {}, None, False),
    "mraru": ("mraru", {}, None, False),
    "llkd": ("llkd", {}, None, False),
    "noise_aware": ("noise_aware", {}, None, False),
    "noise_aware/selection-only": ("noise_aware", {"weighting": "none"}, None, False),
    "random+doubt": ("random", {}, "cleanlab", False),
    "margin+doubt": ("margin", {}, "cleanlab", False),
    "noise_aware+doubt": ("noise_aware", {}, "cleanlab", False),
    "noise_aware+doubt+soft": ("noise_aware", {}, "cleanlab", True),
}
BUDGET = {"bbc-news": 200, "reuters-r8": 200, "20newsgroups": 400}
VAL = 50


@dataclass
class Outcome:
    test_accuracy: float
    sold_accuracy: float
    calls: int
    seconds: float
    run_id: int


def run(project: Project, dataset: str, teacher: str, setup: str, seed: int) -> Outcome:
    name, options = TEACHERS[teacher]
    selector, selector_options, doubt, soft = SETUPS[setup]
    started = time.perf_counter()
    result = project.distill(DistillConfig(
        teacher=name, teacher_options=options, selector=selector, selector_options=selector_options,
        student_options={"C": 10.0}, seed_size=20, batch=20, budget_labels=BUDGET[dataset], val_limit=VAL, seed=seed,
        doubt=doubt, soft_labels=soft))
    last = result.rounds[-1]
    return Outcome(last.metrics["test"]["accuracy"], last.metrics.get("teacher_accuracy", float("nan")),
                   last.n_labels + VAL, time.perf_counter() - started, result.run_id)


def teacher_on_test(project: Project, teacher: str) -> float:
    name, options = TEACHERS[teacher]
    accuracy = project.teacher_on_test(DistillConfig(teacher=name, teacher_options=options))
    assert accuracy is not None  # the benchmark's teachers are free
    return accuracy


def audit_of(project: Project, run_id: int, rng: np.random.Generator) -> dict[str, float]:
    """The audit of one run's teacher labels against gold."""
    gold = project.store.gold()
    labels = Ledger(project.store).run_labels(run_id)
    taught = sorted(d for d, lab in labels.items() if lab.source == "teacher" and d in gold)
    texts = project.store.texts(taught)
    return audit_figures(project, [Candidate(d, t, labels[d].label, labels[d].confidence, None)
                                   for d, t in zip(taught, texts, strict=True)], gold, rng)


def audit_figures(project: Project, candidates: list[Candidate], gold: dict[str, str],
                  rng: np.random.Generator) -> dict[str, float]:
    """Precision of the audit's top 10% against gold, its lift over the error rate, and teacher errors found per 100
    reviews in audit order against random order."""
    model = project.config.embedding.model
    suspects, _ = audit_labels(candidates, {}, lambda ids: project.store.vectors(model, ids), project.labels,
                               get_plugins().get("doubt", "cleanlab").cls(), get_plugins().get("student", "logreg").cls,
                               {"C": 10.0})
    wrong = np.array([s.label != gold[s.doc_id] for s in suspects])
    top = max(1, len(wrong) // 10)
    reviews = min(100, len(wrong))
    error_rate = float(wrong.mean())
    random_found = float(np.mean([wrong[rng.permutation(len(wrong))[:reviews]].sum() for _ in range(200)]))
    return {"labels": len(wrong), "error_rate": error_rate, "top10_precision": float(wrong[:top].mean()),
            "lift": float(wrong[:top].mean() / error_rate) if error_rate else float("nan"),
            "fixed_per_100_audit": float(wrong[:reviews].sum()) * 100 / reviews,
            "fixed_per_100_random": random_found * 100 / reviews}


def project_audit(dataset: str, rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """The audit as a project would run it after many runs: every document each noisy teacher labelled, across all
    the benchmark's runs with it, judged together, against gold."""
    project = project_for(dataset)
    out: dict[str, dict[str, float]] = {}
    with project:
        gold = project.store.gold()
        for teacher in TEACHERS:
            name, options = TEACHERS[teacher]
            if teacher == "perfect":
                continue
            model = get_plugins().get("teacher", name).cls(**options).model_name
            rows = project.store.con.execute(
                "SELECT doc_id, arg_max(parsed_label, id), arg_max(confidence, id) FROM teacher_calls "
                "WHERE model = ? AND parsed_label IS NOT NULL AND doc_id IS NOT NULL GROUP BY doc_id ORDER BY doc_id",
                [model]).fetchall()
            rows = [r for r in rows if r[0] in gold]
            if not rows:
                continue
            texts = project.store.texts([r[0] for r in rows])
            candidates = [Candidate(d, t, lab, conf, model) for (d, lab, conf), t in zip(rows, texts, strict=True)]
            out[teacher] = audit_figures(project, candidates, gold, rng)
            a = out[teacher]
            print(f"  {dataset} {teacher:14s} audit of {a['labels']:.0f} labels: error rate {a['error_rate']:.3f}, "
                  f"top 10% {a['top10_precision']:.3f} (lift {a['lift']:.2f}x), per 100 reviews "
                  f"{a['fixed_per_100_audit']:.1f} vs {a['fixed_per_100_random']:.1f} random", flush=True)
    return out


def benchmark(dataset: str, seeds: int, teachers: list[str], setups: list[str]) -> dict[str, Any]:
    project = project_for(dataset)
    results: dict[str, Any] = {"dataset": dataset, "budget": BUDGET[dataset] + VAL, "teachers": {}}
    rng = np.random.default_rng(0)
    with project:
        for teacher in teachers:
            entry: dict[str, Any] = {"teacher_test_accuracy": teacher_on_test(project, teacher), "setups": {}}
            for setup in setups:
                outcomes = [run(project, dataset, teacher, setup, seed) for seed in range(seeds)]
                entry["setups"][setup] = [o.__dict__ for o in outcomes]
                if setup == "margin" and teacher != "perfect":
                    entry["audit"] = [audit_of(project, o.run_id, rng) for o in outcomes]
                print(f"  {dataset} {teacher:14s} {setup:24s} "
                      + " ".join(f"{o.test_accuracy:.3f}" for o in outcomes)
                      + f"  ({np.mean([o.seconds for o in outcomes]):.0f}s/run)", flush=True)
            results["teachers"][teacher] = entry
    return results


def merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    """Results of a later pass join an earlier one's. The first pass of 2026-11-24 ran `noise_aware` before it kept
    LLKD's confident training, i.e. as `weighting=none`: a later `noise_aware` renames it selection-only."""
    for teacher, entry in more["teachers"].items():
        have = into["teachers"].setdefault(teacher, {**entry, "setups": {}})
        if "noise_aware" in entry["setups"] and "noise_aware" in have["setups"]:
            for name in [n for n in have["setups"] if n.startswith("noise_aware")]:
                have["setups"][name.replace("noise_aware", "noise_aware/selection-only", 1)] = have["setups"].pop(name)
        have["setups"].update(entry["setups"])
        if "audit" in entry:
            have["audit"] = entry["audit"]


def report(results: dict[str, Any]) -> None:
    print(f"\n{results['dataset']}: {results['budget']} teacher labels per run (validation included)")
    for teacher, entry in results["teachers"].items():
        own = entry["teacher_test_accuracy"]
        setups = entry["setups"]
        margin = np.mean([o["test_accuracy"] for o in setups.get("margin", [])] or [np.nan])
        print(f"  teacher {teacher}: its own test accuracy {own:.3f}")
        print(f"    {'setup':38s} {'test acc':>8s} {'std':>6s} {'vs margin':>9s} {'sold acc':>8s} "
              f"{'student/teacher':>15s}")
        for setup, outcomes in setups.items():
            acc = np.array([o["test_accuracy"] for o in outcomes])
            sold = np.nanmean([o["sold_accuracy"] for o in outcomes])
            print(f"    {setup:38s} {acc.mean():8.3f} {acc.std():6.3f} {acc.mean() - margin:+9.3f} {sold:8.3f} "
                  f"{acc.mean() / own:15.3f}")
        if "audit" in entry:
            a = {k: float(np.mean([x[k] for x in entry["audit"]])) for k in entry["audit"][0]}
            print(f"    audit of margin's labels ({a['labels']:.0f}): error rate {a['error_rate']:.3f}, top 10% "
                  f"precision {a['top10_precision']:.3f} (lift {a['lift']:.2f}x); errors fixed per 100 reviews: "
                  f"{a['fixed_per_100_audit']:.1f} in audit order vs {a['fixed_per_100_random']:.1f} random "
                  f"({a['fixed_per_100_audit'] / max(a['fixed_per_100_random'], 1e-9):.2f}x)")


# Two models of different quality and price behind the fake OpenAI-compatible server (tests/fake_llm_server.py):
# prices as gpt-4o-mini's and gpt-4o's list prices (USD per million tokens, in / out).
# Confidence is informative but overlapping: a cheap model's wrong answers spread over 0.55-0.85, its right ones over
# 0.73-1.0 (an overconfident small model's logprobs).
TIERS = {"cheap": {"error_rate": 0.2, "right": 0.88, "wrong": 0.7, "spread": 0.3},
         "other": {"error_rate": 0.2, "right": 0.88, "wrong": 0.7, "spread": 0.3},
         "strong": {"error_rate": 0.05, "right": 0.93, "wrong": 0.75, "spread": 0.3}}
PRICES = {"cheap": (0.15, 0.6), "other": (0.15, 0.6), "strong": (2.5, 10.0)}


def tiers(n: int) -> dict[str, Any]:
    """Label accuracy and cost of the strong model alone, the cheap one alone, cascades at three thresholds and a
    committee of two cheap models escalating to the strong one, on `n` reuters-r8 documents, every request over
    HTTP through litellm to the fake server."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from fake_llm_server import FakeLLM

    from kdstudio.teaching import TeacherRunner

    directory = OUT / "projects" / "tiers-reuters"
    project = Project.open(directory) if Project.exists(directory) else Project.from_dataset(
        "reuters-r8", directory, limit=n, seed=0)[0]
    results: dict[str, Any] = {"documents": n, "setups": {}}
    (OUT / "tiers-server").mkdir(parents=True, exist_ok=True)
    with project, FakeLLM(OUT / "tiers-server") as server:
        gold = project.store.gold()
        ids = sorted(gold)[:n]
        texts = project.store.texts(ids)
        server.configure(lookup={t.strip(): gold[d] for d, t in zip(ids, texts, strict=True)}, models=TIERS)

        def member(model: str) -> str:
            price_in, price_out = PRICES[model]
            return f"llm model=openai/{model} api_base={server.api_base} price_in={price_in} price_out={price_out}"

        setups = {
            "strong alone": ("llm", dict(item.split("=", 1) for item in member("strong").split()[1:])),
            "cheap alone": ("llm", dict(item.split("=", 1) for item in member("cheap").split()[1:])),
            **{f"cascade below {b}": ("cascade", {"first": member("cheap"), "then": member("strong"), "below": b})
               for b in (0.7, 0.8, 0.9)},
            "committee (2 cheap, strong settles)": ("committee", {"members": f"{member('cheap')}; {member('other')}",
                                                                  "escalate": member("strong")}),
        }
        docs = [Doc(d, t) for d, t in zip(ids, texts, strict=True)]
        descriptions = {x.name: x.description for x in project.config.labels}
        for name, (kind, options) in setups.items():
            teacher = get_plugins().get("teacher", kind).cls(**options)
            with project.store.transaction() as con:  # every setup pays for its own answers: no cache between them
                con.execute("DELETE FROM labels")
                con.execute("DELETE FROM teacher_calls")
            ledger = Ledger(project.store)
            before = float(project.store.con.execute("SELECT coalesce(sum(cost_usd), 0) FROM teacher_calls")
                           .fetchall()[0][0])
            outcome = TeacherRunner(ledger, teacher, TeachContext(project.labels, descriptions), None).label(docs)
            spent = float(project.store.con.execute("SELECT coalesce(sum(cost_usd), 0) FROM teacher_calls")
                          .fetchall()[0][0]) - before
            accuracy = float(np.mean([outcome.labelled[d].label == gold[d] if d in outcome.labelled else False
                                      for d in ids]))
            results["setups"][name] = {"accuracy": accuracy, "usd": spent}
            print(f"  {name:36s} accuracy {accuracy:.3f}  ${spent:.4f}", flush=True)
    return results


def tiers_report(results: dict[str, Any]) -> None:
    strong = results["setups"]["strong alone"]
    print(f"\nteacher tiers on {results['documents']} reuters-r8 documents (fake server, two models)")
    print(f"  {'setup':36s} {'accuracy':>8s} {'vs strong':>9s} {'USD':>9s} {'cost/strong':>11s} {'acc per $':>9s}")
    for name, r in results["setups"].items():
        print(f"  {name:36s} {r['accuracy']:8.3f} {r['accuracy'] - strong['accuracy']:+9.3f} {r['usd']:9.4f} "
              f"{r['usd'] / strong['usd']:11.2f} {r['accuracy'] / max(r['usd'], 1e-9):9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(BUDGET))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--teachers", nargs="+", default=list(TEACHERS))
    parser.add_argument("--setups", nargs="+", default=list(SETUPS))
    parser.add_argument("--audit", action="store_true", help="only the project-wide audit of each noisy teacher's "
                                                                 "labels (after a benchmark run)")
    parser.add_argument("--tag", default="", help="added to the results' file names")
    parser.add_argument("--tiers", type=int, metavar="N", help="only the committee and cascade on N documents")
    parser.add_argument("--report", nargs="+", type=Path, help="reprint the tables of saved results")
    args = parser.parse_args()
    if args.report:
        merged: dict[str, dict[str, Any]] = {}
        for path in args.report:
            data = json.loads(path.read_text())
            if "documents" in data:
                tiers_report(data)
            else:
                merge(merged.setdefault(data["dataset"], {**data, "teachers": {}}), data)
        for data in merged.values():
            report(data)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    if args.audit:
        audits = {d: project_audit(d, np.random.default_rng(0)) for d in args.datasets}
        (OUT / "noisy-audit.json").write_text(json.dumps(audits, indent=1))
        return
    if args.tiers:
        results = tiers(args.tiers)
        (OUT / "noisy-tiers.json").write_text(json.dumps(results, indent=1))
        tiers_report(results)
        return
    for dataset in args.datasets:
        results = benchmark(dataset, args.seeds, args.teachers, args.setups)
        (OUT / f"noisy-{dataset}{args.tag}.json").write_text(json.dumps(results, indent=1))
        report(results)


if __name__ == "__main__":
    main()
