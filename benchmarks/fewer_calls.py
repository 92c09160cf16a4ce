"""Fewer teacher calls: the unlabelled pool teaching (self-training, label spreading), cold-start seed selectors,
the budget autopilot, and small-text's BreakingTies as the peer, through the real loop with the simulated teacher.

    .venv/bin/pip install --target benchmarks/out/peer small-text==1.4.1 dill --no-deps   # the peer, benchmark only
    .venv/bin/python benchmarks/learning_curves.py --fewer-calls                          # all three datasets
    .venv/bin/python benchmarks/learning_curves.py --fewer-calls --datasets reuters-r8 --seeds 1   # a quick look
    .venv/bin/python benchmarks/learning_curves.py --fewer-calls --report benchmarks/out/fewer_calls*.json

Per dataset: labels each setup needs to reach random's final accuracy and the saving against random; accuracy at
fixed label counts; rounds until every class has been seen; share of the pool scored per batch; time per round;
where the autopilot stopped against the best stopping point in hindsight. Then the time of a logistic-regression
round on a 50-class problem with the machine busy, with default BLAS threads and with kdstudio's.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio import autopilot
from kdstudio.loop import DistillConfig
from kdstudio.project import Project

OUT = Path("benchmarks/out")
PEER = OUT / "peer"
BUDGETS = {"bbc-news": 600, "reuters-r8": 600, "20newsgroups": 1000}
CHECKPOINTS = (60, 100, 140, 200, 300, 500, 1000)
AUTOPILOT = "0.005/100"
SETUPS: dict[str, dict[str, Any]] = {
    "random": {"selector": "random"},
    "random+self": {"selector": "random", "free_labels": "self-train"},
    "random+spread": {"selector": "random", "free_labels": "spread"},
    "margin": {"selector": "margin"},
    "margin+self": {"selector": "margin", "free_labels": "self-train"},
    "margin+spread": {"selector": "margin", "free_labels": "spread"},
    "mraru": {"selector": "mraru"},
    "mraru+self": {"selector": "mraru", "free_labels": "self-train"},
    "mraru+spread": {"selector": "mraru", "free_labels": "spread"},
    "margin/typiclust": {"selector": "margin", "seed_selector": "typiclust"},
    "margin/diversity": {"selector": "margin", "seed_selector": "diversity"},
    "margin+self/typiclust": {"selector": "margin", "free_labels": "self-train", "seed_selector": "typiclust"},
    # Looser self-training: more pseudo-labels at a lower agreement with validation.
    "mraru+self-loose": {"selector": "mraru", "free_labels": "self-train",
                         "free_labels_options": {"precision": 0.9, "ratio": 10.0}},
    "margin+self-loose": {"selector": "margin", "free_labels": "self-train",
                          "free_labels_options": {"precision": 0.9, "ratio": 10.0}},
}


def run_setup(project: Project, setup: str, seed: int, budget: int, **extra: Any) -> dict[str, Any]:
    result = project.distill(DistillConfig(
        teacher="oracle", student="logreg", student_options={"C": 10.0}, seed_size=20, batch=20,
        budget_labels=budget, val_limit=100, seed=seed, **{**SETUPS[setup], **extra}))
    gold = project.store.gold()
    pool_size = len(project.store.ids_in_split("pool"))
    seen: set[str] = set()
    all_classes_round = None
    for row in project.rounds(result.run_id):
        seen |= {gold[s["id"]] for s in row.selected if s["id"] in gold}
        if all_classes_round is None and len(seen) == len(project.labels):
            all_classes_round = row.round
    rounds = result.rounds
    return {
        "labels": [r.n_labels for r in rounds],
        "accuracy": [r.metrics["test"]["accuracy"] for r in rounds],
        "val_accuracy": [r.metrics["val"]["accuracy"] for r in rounds],
        "usd": [r.cost_usd for r in rounds],
        "round_s": [sum(r.timings.get(k, 0.0) for k in ("select_s", "teach_s", "train_s", "eval_s"))
                    for r in rounds[1:]],
        "train_s": [r.timings.get("train_s", 0.0) for r in rounds[1:]],
        "scored_share": [r.scored / max(1, pool_size - before.n_selected)
                         for before, r in itertools.pairwise(rounds)],
        "all_classes_round": all_classes_round, "stop_reason": result.stop_reason,
    }


def breaking_ties(project: Project, seed: int, budget: int) -> dict[str, Any]:
    """small-text's BreakingTies with the same logistic regression on the same embeddings and gold answers."""
    sys.path.insert(0, str(PEER))
    from sklearn.linear_model import LogisticRegression
    from small_text import BreakingTies, PoolBasedActiveLearner, SklearnClassifierFactory
    from small_text.data import SklearnDataset

    ids, matrix = project.store.embedding_matrix(project.config.embedding.model)
    row = {d: i for i, d in enumerate(ids)}
    gold = project.store.gold()
    index = {label: i for i, label in enumerate(project.labels)}
    pool = [d for d in project.store.ids_in_split("pool") if d in gold]
    test = [d for d in project.store.ids_in_split("test") if d in gold]
    y = np.array([index[gold[d]] for d in pool])
    y_test = np.array([index[gold[d]] for d in test])
    targets = np.arange(len(index))
    test_set = SklearnDataset(matrix[[row[d] for d in test]], y_test, target_labels=targets)
    learner = PoolBasedActiveLearner(SklearnClassifierFactory(LogisticRegression(C=10.0, max_iter=1000), len(index)),
                                     BreakingTies(), SklearnDataset(matrix[[row[d] for d in pool]], y,
                                                                    target_labels=targets))
    first = np.random.default_rng(seed).choice(len(y), size=20, replace=False)
    learner.initialize_data(first, y[first])
    labels, accuracy = [20], [float(np.mean(learner.classifier.predict(test_set) == y_test))]
    while labels[-1] < budget:
        asked = learner.query(num_samples=20)
        learner.update(y[asked])
        labels.append(labels[-1] + 20)
        accuracy.append(float(np.mean(learner.classifier.predict(test_set) == y_test)))
    return {"labels": labels, "accuracy": accuracy}


def autopilot_stop(run: dict[str, Any], rule: str) -> int | None:
    """Where the autopilot stops on a run's recorded rounds (the same rule the loop applies round by round)."""
    parsed = autopilot.GainRule.parse(rule)
    forecasts: list[dict[str, Any] | None] = []
    for i in range(len(run["labels"])):
        forecasts.append(autopilot.forecast(parsed, run["labels"][:i + 1], run["usd"][:i + 1],
                                            run["val_accuracy"][:i + 1]))
        if autopilot.should_stop(parsed, forecasts):
            return run["labels"][i]
    return None


def hindsight_stop(labels: list[int], accuracy: list[float], rule: str) -> int:
    """The first label count after which no later round gains at the rule's rate (test accuracy, known in
    hindsight)."""
    parsed = autopilot.GainRule.parse(rule)
    per = parsed.per_labels or 100
    for i, n in enumerate(labels):
        later = [(accuracy[j] - accuracy[i]) / (labels[j] - n) * per for j in range(i + 1, len(labels))]
        if not later or max(later) < parsed.threshold:
            return n
    return labels[-1]


def mean_curve(runs: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    length = min(len(r["labels"]) for r in runs)
    return runs[0]["labels"][:length], np.mean([r["accuracy"][:length] for r in runs], axis=0).tolist()


def reach(labels: list[int], accuracy: list[float], level: float) -> int | None:
    return next((n for n, a in zip(labels, accuracy, strict=True) if a >= level), None)


def summarize(runs_by_setup: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for setup, runs in runs_by_setup.items():
        labels, accuracy = mean_curve(runs)
        entry: dict[str, Any] = {"labels": labels, "accuracy": accuracy,
                                 "std": np.std([r["accuracy"][:len(labels)] for r in runs], axis=0).tolist()}
        if "round_s" in runs[0]:
            entry.update(
                round_ms=1000 * float(np.mean([t for r in runs for t in r["round_s"]])),
                train_ms=1000 * float(np.mean([t for r in runs for t in r["train_s"]])),
                scored=float(np.mean([s for r in runs for s in r["scored_share"]])),
                all_classes_rounds=[r["all_classes_round"] for r in runs])
        summary[setup] = entry
    return summary


def autopilot_report(runs: list[dict[str, Any]], real: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    """The autopilot's stops (replayed on each seed's full run, and from the real runs) against the hindsight-best
    stop on the mean test curve."""
    labels, accuracy = mean_curve(runs)
    best = hindsight_stop(labels, accuracy, rule)
    replayed = [autopilot_stop(r, rule) or r["labels"][-1] for r in runs]
    stopped = [r["labels"][-1] for r in real]
    acc_at = dict(zip(labels, accuracy, strict=True))
    mean_stop = int(round(float(np.mean(stopped or replayed)) / 20) * 20)
    nearest = min(acc_at, key=lambda n: abs(n - mean_stop))
    return {"rule": rule, "hindsight_best": best, "hindsight_accuracy": acc_at[best], "replayed": replayed,
            "real": stopped, "real_reasons": [r["stop_reason"] for r in real], "mean_stop": mean_stop,
            "accuracy_at_stop": acc_at[nearest], "budget_end": labels[-1], "accuracy_at_end": accuracy[-1]}


def report(name: str, summary: dict[str, Any], pilot: dict[str, Any] | None) -> None:
    final = summary["random"]["accuracy"][-1]
    base = reach(summary["random"]["labels"], summary["random"]["accuracy"], final)
    print(f"\n{name}: random's final accuracy {final:.3f} at {summary['random']['labels'][-1]} labels")
    print(f"  {'setup':24s} {'to rnd':>6s} {'saving':>6s}  " + "  ".join(f"@{n:<5d}" for n in CHECKPOINTS)
          + "  all classes (rounds)  round ms  train ms  scored")
    for setup, s in summary.items():
        to = reach(s["labels"], s["accuracy"], final)
        saving = f"{base / to:.2f}" if to and base else "-"
        at = "  ".join(f"{s['accuracy'][s['labels'].index(n)]:.3f}" if n in s["labels"] else "   -  "
                       for n in CHECKPOINTS)
        classes = ",".join("-" if r is None else str(r) for r in s.get("all_classes_rounds", []))
        timing = (f"{s['round_ms']:8.0f}  {s['train_ms']:8.0f}  {100 * s['scored']:5.1f}%" if "round_ms" in s
                  else f"{'':8s}  {'':8s}  {'':6s}")
        print(f"  {setup:24s} {to or '>':>6} {saving:>6s}  {at}  {classes:>20s}  {timing}")
    if pilot:
        gap = (pilot["mean_stop"] - pilot["hindsight_best"]) / pilot["hindsight_best"]
        print(f"  autopilot {pilot['rule']} on {pilot['setup']}: stopped at {pilot['real'] or pilot['replayed']} "
              f"labels (replayed on the full runs: {pilot['replayed']}); hindsight-best {pilot['hindsight_best']} "
              f"({gap:+.0%}); test accuracy {pilot['accuracy_at_stop']:.3f} at the stop vs "
              f"{pilot['hindsight_accuracy']:.3f} at the hindsight-best and {pilot['accuracy_at_end']:.3f} at the "
              f"budget's end ({pilot['budget_end']} labels)")


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 0.0
    while time.perf_counter() < end:
        x += 1.0


def round_time_50_classes(repeats: int = 5) -> dict[str, Any]:
    """A logistic-regression round (fit on 600 labels, predict 2,000 test and 10,000 pool documents) on 50 classes of
    384-dim vectors, with two busy processes beside it: default BLAS threads against kdstudio's sized pools."""
    from kdstudio.plugins import get_plugins
    from kdstudio.threads import sized_pools

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 384))
    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(50, size=n)
        x = centres[y] + 2.5 * rng.normal(size=(n, 384))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y
    X, y = sample(600)
    X_eval, _ = sample(12_000)
    student_cls = get_plugins().get("student", "logreg").cls

    def one_round() -> float:
        started = time.perf_counter()
        student = student_cls(C=10.0)
        student.fit(X, y, 50)
        student.predict_proba(X_eval)
        return time.perf_counter() - started

    burners = [multiprocessing.Process(target=_burn, args=(600.0,)) for _ in range(2)]
    for b in burners:
        b.start()
    try:
        default = [one_round() for _ in range(repeats)]
        with sized_pools():
            sized = [one_round() for _ in range(repeats)]
    finally:
        for b in burners:
            b.terminate()
    result = {"default_s": float(np.median(default)), "sized_s": float(np.median(sized)),
              "threads": os.environ.get("KDSTUDIO_THREADS", "1"), "cores": os.cpu_count()}
    result["speedup"] = result["default_s"] / result["sized_s"]
    print(f"\nlogistic-regression round, 50 classes, 600 labels, 12,000 documents scored, two busy processes beside "
          f"it on {os.cpu_count()} cores: default BLAS threads {result['default_s']:.2f}s, kdstudio's sized pools "
          f"{result['sized_s']:.2f}s ({result['speedup']:.1f}x)")
    return result


def oracle_writes(project: Project, batches: int = 8) -> dict[str, Any]:
    """What recording a batch of 20 simulated answers costs: one transaction per answer (as an LLM's answers are
    written) against one per batch (what a local teacher gets). Fresh noise seeds, so that nothing is a cache hit."""
    from kdstudio import steps
    from kdstudio.interfaces import Doc
    from kdstudio.store import Ledger
    from kdstudio.teaching import TeacherRunner

    oracle_cls = project.plugins.get("teacher", "oracle").cls
    ledger, pool, gold = Ledger(project.store), project.store.ids_in_split("pool"), project.store.gold()
    rng = np.random.default_rng(0)
    times: dict[bool, list[float]] = {False: [], True: []}
    salt = int(time.time())  # noise seeds never used before in this project
    try:
        for i in range(2 * batches):
            local = bool(i % 2)
            oracle_cls.local = local
            teacher = oracle_cls(seed=salt + i)
            runner = TeacherRunner(ledger, teacher, steps.teach_context(ledger, teacher, 0, project.labels, {}, gold),
                                   None)
            ids = rng.choice(pool, 20, replace=False).tolist()
            started = time.perf_counter()
            runner.label([Doc(d, t) for d, t in zip(ids, project.store.texts(ids), strict=True)])
            times[local].append(time.perf_counter() - started)
    finally:
        oracle_cls.local = True
    result = {"per_answer_ms": 1000 * float(np.median(times[False])),
              "per_batch_ms": 1000 * float(np.median(times[True]))}
    print(f"\nrecording 20 simulated answers: one transaction per answer {result['per_answer_ms']:.0f} ms, one per "
          f"batch {result['per_batch_ms']:.0f} ms ({result['per_answer_ms'] / result['per_batch_ms']:.1f}x)")
    return result


def timings(project_for: Any) -> dict[str, Any]:
    with project_for("reuters-r8") as project:
        writes = oracle_writes(project)
    return {"round_50_classes": round_time_50_classes(), "oracle_writes": writes}


def run(datasets: list[str], seeds: int, setups: list[str], tag: str, project_for: Any) -> None:
    results: dict[str, Any] = {}
    out = OUT / f"fewer_calls{tag}.json"
    for dataset in datasets:
        print(f"== {dataset}", flush=True)
        budget = BUDGETS[dataset]
        with project_for(dataset) as project:
            runs: dict[str, list[dict[str, Any]]] = {}
            for setup in setups:
                started = time.perf_counter()
                runs[setup] = [run_setup(project, setup, seed, budget) for seed in range(seeds)]
                print(f"  {setup}: {seeds} seeds in {time.perf_counter() - started:.0f}s", flush=True)
            if PEER.exists():
                runs["breakingties (small-text)"] = [breaking_ties(project, seed, budget) for seed in range(seeds)]
            headline = max((s for s in runs if "+" in s and "/" not in s and "mraru" not in s),
                           key=lambda s: float(np.mean(mean_curve(runs[s])[1][:10])), default=None)
            pilot = None
            if headline:
                real = [run_setup(project, headline, seed, budget, stop_when_gain_below=AUTOPILOT)
                        for seed in range(seeds)]
                pilot = {"setup": headline, **autopilot_report(runs[headline], real, AUTOPILOT)}
            summary = summarize(runs)
            report(dataset, summary, pilot)
            results[dataset] = {"summary": summary, "autopilot": pilot}
            out.write_text(json.dumps({"datasets": results}, indent=1))  # kept as it goes
    out.write_text(json.dumps({"datasets": results, **timings(project_for)}, indent=1))
    print(f"\nwrote {out}")


def reprint(paths: list[Path]) -> None:
    for path in paths:
        data = json.loads(path.read_text())
        for dataset, entry in data["datasets"].items():
            report(dataset, entry["summary"], entry["autopilot"])
