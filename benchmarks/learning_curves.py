"""Learning curves of the selection strategies, with the simulated (oracle) teacher, through the real loop.

    .venv/bin/python benchmarks/learning_curves.py                      # everything (about an hour on 2 cores)
    .venv/bin/python benchmarks/learning_curves.py --datasets bbc-news --seeds 1 --students logreg   # a quick look
    .venv/bin/python benchmarks/learning_curves.py --fewer-calls      # free labels, cold starts, the autopilot, peer

Per dataset it prints the full-data ceiling, the labels each strategy needs to reach 95% and 98% of it, the
saving against random, and accuracy at fixed label counts; then M-RARU's vs entropy's selection time per batch
on pools of 10k and 1M documents. JSON and a PNG plot go to benchmarks/out/.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.loop import DistillConfig
from kdstudio.plugins import get_plugins
from kdstudio.pool_view import PoolView
from kdstudio.project import Project

OUT = Path("benchmarks/out")
BUDGETS = {"bbc-news": 600, "reuters-r8": 600, "20newsgroups": 1000}
CHECKPOINTS = (100, 200, 500, 600, 1000)
STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "entropy": ("entropy", {}),
    "margin": ("margin", {}),
    "mraru": ("mraru", {}),
    "mraru-sharp": ("mraru", {"temperature": 0.5}),
    "mraru-relative": ("mraru", {"acceptance": "relative", "sharpness": 3.0}),
    "diversity": ("diversity", {}),
    "llkd": ("llkd", {}),
}
GBDT_STRATEGIES = ("random", "margin", "mraru")
STUDENT_OPTIONS = {"logreg": {"C": 10.0}, "gbdt": {"max_iter": 50}}
# Boosting 384-dimensional embeddings costs seconds per fit on 2 cores, so its curves are sampled every 100 labels.
BATCH = {"logreg": 20, "gbdt": 100}


@dataclass
class Curve:
    labels: list[int]
    accuracy: list[float]
    select_s: list[float]
    scored_share: list[float]


def project_for(dataset: str) -> Project:
    directory = OUT / "projects" / dataset
    if Project.exists(directory):
        project = Project.open(directory)
    else:
        project, report = Project.from_dataset(dataset, directory)
        print(f"  {report.summary()}")
    started = time.perf_counter()
    report = project.embed()
    if report.embedded:
        print(f"  embedded {report.embedded} documents in {time.perf_counter() - started:.0f}s")
    return project


def ceiling(project: Project, student: str) -> float:
    """The student trained on every pool document with its gold label."""
    ids, matrix = project.store.embedding_matrix(project.config.embedding.model)
    row = {d: i for i, d in enumerate(ids)}
    gold = project.store.gold()
    index = {label: i for i, label in enumerate(project.labels)}
    pool = [d for d in project.store.ids_in_split("pool") if d in gold]
    test = [d for d in project.store.ids_in_split("test") if d in gold]
    model = get_plugins().get("student", student).cls(**STUDENT_OPTIONS[student])
    model.fit(matrix[[row[d] for d in pool]], np.array([index[gold[d]] for d in pool]), len(project.labels))
    predicted = model.predict_proba(matrix[[row[d] for d in test]]).argmax(axis=1)
    return float(np.mean(predicted == np.array([index[gold[d]] for d in test])))


def run_curve(project: Project, strategy: str, student: str, seed: int, budget: int) -> Curve:
    selector, options = STRATEGIES[strategy]
    batch = BATCH[student]
    result = project.distill(DistillConfig(
        teacher="oracle", selector=selector, selector_options=options, student=student,
        student_options=STUDENT_OPTIONS[student], seed_size=20, batch=batch, budget_labels=budget,
        val_limit=100, seed=seed))
    pool_size = len(project.store.ids_in_split("pool"))
    return Curve(
        labels=[r.n_labels for r in result.rounds],
        accuracy=[r.metrics["test"]["accuracy"] for r in result.rounds],
        select_s=[r.timings.get("select_s", 0.0) for r in result.rounds[1:]],
        scored_share=[r.scored / max(1, pool_size - before.n_selected)
                      for before, r in zip(result.rounds, result.rounds[1:], strict=False)],
    )


def labels_to_reach(labels: list[int], accuracy: list[float], threshold: float) -> int | None:
    return next((n for n, a in zip(labels, accuracy, strict=True) if a >= threshold), None)


def mean_curve(curves: list[Curve]) -> tuple[list[int], list[float], list[float]]:
    length = min(len(c.labels) for c in curves)
    acc = np.array([c.accuracy[:length] for c in curves])
    return curves[0].labels[:length], acc.mean(axis=0).tolist(), acc.std(axis=0).tolist()


def summarize(results: dict[str, list[Curve]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for strategy, curves in results.items():
        labels, acc, std = mean_curve(curves)
        summary[strategy] = {
            "labels": labels, "accuracy": acc, "std": std,
            "select_ms_per_batch": 1000 * float(np.mean([s for c in curves for s in c.select_s] or [0])),
            "scored_share": float(np.mean([s for c in curves for s in c.scored_share] or [0])),
        }
    return summary


def report(name: str, top: float, summary: dict[str, Any]) -> None:
    """Print, per strategy: labels to reach 95% / 98% of the full-data ceiling and random's final accuracy,
    the saving against random, accuracy at fixed label counts, selection time and share of the pool scored."""
    random_final = summary["random"]["accuracy"][-1] if "random" in summary else None
    for s in summary.values():
        s["to_95"] = labels_to_reach(s["labels"], s["accuracy"], 0.95 * top)
        s["to_98"] = labels_to_reach(s["labels"], s["accuracy"], 0.98 * top)
        s["to_random_final"] = (labels_to_reach(s["labels"], s["accuracy"], random_final)
                                if random_final is not None else None)
        s["at"] = {n: s["accuracy"][s["labels"].index(n)] for n in CHECKPOINTS if n in s["labels"]}
    base = summary.get("random", {})
    for s in summary.values():
        for level in ("to_95", "to_98", "to_random_final"):
            ours, theirs = s[level], base.get(level)
            s[f"saving_{level}"] = (theirs / ours) if ours and theirs else None
    final = f"{random_final:.3f}" if random_final is not None else "-"
    print(f"\n{name}: ceiling {top:.3f}; 95% = {0.95 * top:.3f}, 98% = {0.98 * top:.3f}; random's final {final}")
    print(f"  {'strategy':16s} {'to 95%':>7s} {'to 98%':>7s} {'to rnd':>7s} {'saving 95/98/rnd':>18s}  "
          + "  ".join(f"@{n:<5d}" for n in CHECKPOINTS) + "  select ms  scored")
    for strategy, s in summary.items():
        saving = "/".join("-" if s[f"saving_{lv}"] is None else f"{s[f'saving_{lv}']:.2f}"
                          for lv in ("to_95", "to_98", "to_random_final"))
        at = "  ".join(f"{s['at'][n]:.3f}" if n in s["at"] else "   -  " for n in CHECKPOINTS)
        print(f"  {strategy:16s} {s['to_95'] or '>':>7} {s['to_98'] or '>':>7} {s['to_random_final'] or '>':>7} "
              f"{saving:>18s}  {at}  {s['select_ms_per_batch']:9.1f}  {100 * s['scored_share']:5.1f}%")


class _LinearStudent:
    """A logistic-regression-sized student for the timing of selection alone."""

    def __init__(self, k: int, d: int, rng: np.random.Generator) -> None:
        # Scaled so that, like a trained student, it is confident about most documents.
        self.W = (6.0 * rng.normal(size=(d, k))).astype(np.float32)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = X @ self.W
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def selection_scaling(repeats: int = 5) -> dict[str, Any]:
    """Selection time per batch of 20 on pools of 10k and 1M documents (20 classes, 384-dim vectors)."""
    plugins = get_plugins()
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {}
    vectors = rng.normal(size=(1_000_000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    student = _LinearStudent(20, 384, rng)
    labels = [f"c{i}" for i in range(20)]
    print("\nselection time per batch of 20 (logistic-regression-sized student, 20 classes)")
    for size in (10_000, 1_000_000):
        ids = np.arange(size)
        for name, options in (("entropy", {}), ("mraru", {}), ("mraru", {"acceptance": "relative"})):
            selector = plugins.get("selector", name).cls(**options)
            times, scored = [], []
            for r in range(repeats):
                pool = PoolView(ids, lambda chunk: vectors[chunk], lambda chunk: vectors[chunk], [], student, labels, r,
                             np.random.default_rng(r))
                started = time.perf_counter()
                choice = selector.select(pool, 20)
                times.append(time.perf_counter() - started)
                scored.append(choice.scored)
            key = f"{name}{'-relative' if options else ''}@{size}"
            results[key] = {"ms": 1000 * float(np.median(times)), "scored": float(np.mean(scored))}
            print(f"  {key:24s} {results[key]['ms']:9.2f} ms   scored {results[key]['scored']:>9,.0f}")
    for name in ("entropy", "mraru", "mraru-relative"):
        ratio = results[f"{name}@1000000"]["ms"] / results[f"{name}@10000"]["ms"]
        results[f"{name} 1M/10k"] = ratio
        print(f"  {name}: 1M pool / 10k pool time = {ratio:.1f}x")
    return results


def finetune_scoring_cost(project: Project, n: int = 256) -> dict[str, Any]:
    """What scoring one candidate costs when the student is the fine-tuned MiniLM (forward pass only)."""
    student_cls = get_plugins().get("student", "finetune").cls
    ids = project.store.ids_in_split("pool")[:n]
    texts = project.store.texts(ids)
    gold = project.store.gold(ids)
    index = {label: i for i, label in enumerate(project.labels)}
    student = student_cls(epochs=1)
    student.fit(texts[:32], np.array([index[gold[d]] for d in ids[:32]]), len(project.labels))
    started = time.perf_counter()
    student.predict_proba(texts)
    per_doc = (time.perf_counter() - started) / n
    result = {"s_per_doc": per_doc, "entropy_10k_s": per_doc * 10_000, "entropy_1M_s": per_doc * 1_000_000}
    print(f"\nfine-tuned student: {1 / per_doc:.0f} docs/s forward on 2 cores; whole-pool scoring would take "
          f"{result['entropy_10k_s']:.0f}s per batch at 10k, {result['entropy_1M_s'] / 3600:.1f}h at 1M "
          f"(extrapolated); M-RARU scores only the ~100-200 candidates it streams past: "
          f"{per_doc * 150:.1f}s per batch at any pool size")
    return result


def finetune_study(dataset: str, sizes: tuple[int, ...] = (100, 200, 500, 1000), test_size: int = 2000,
                   seed: int = 0) -> dict[str, Any]:
    """Frozen embeddings + logistic regression vs the fine-tuned MiniLM on the same random labels (gold, as the
    oracle would give them), nested label sets, one seed: does end-to-end fine-tuning change the picture?"""
    plugins = get_plugins()
    results: dict[str, Any] = {"sizes": list(sizes), "test_size": test_size, "logreg": [], "finetune": [],
                               "finetune_train_s": []}
    with project_for(dataset) as project:
        ids, matrix = project.store.embedding_matrix(project.config.embedding.model)
        row = {d: i for i, d in enumerate(ids)}
        gold = project.store.gold()
        index = {label: i for i, label in enumerate(project.labels)}
        rng = np.random.default_rng(seed)
        pool = rng.permutation(project.store.ids_in_split("pool")).tolist()
        test = sorted(rng.choice(project.store.ids_in_split("test"), size=test_size, replace=False).tolist())
        y_test = np.array([index[gold[d]] for d in test])
        test_texts = project.store.texts(test)
        print(f"\n{dataset}: frozen embeddings vs fine-tuned MiniLM, random labels, {test_size} test documents")
        for n in sizes:
            chosen = pool[:n]
            y = np.array([index[gold[d]] for d in chosen])
            head = plugins.get("student", "logreg").cls(C=10.0)
            head.fit(matrix[[row[d] for d in chosen]], y, len(index))
            acc_head = float(np.mean(head.predict_proba(matrix[[row[d] for d in test]]).argmax(axis=1) == y_test))
            tuned = plugins.get("student", "finetune").cls()
            started = time.perf_counter()
            tuned.fit(project.store.texts(chosen), y, len(index))
            train_s = time.perf_counter() - started
            acc_tuned = float(np.mean(tuned.predict_proba(test_texts).argmax(axis=1) == y_test))
            results["logreg"].append(acc_head)
            results["finetune"].append(acc_tuned)
            results["finetune_train_s"].append(train_s)
            print(f"  {n:5d} labels: logreg on embeddings {acc_head:.3f}   fine-tuned MiniLM {acc_tuned:.3f} "
                  f"(trained in {train_s:.0f}s)", flush=True)
    return results


def plot(all_results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(d, s) for d, by_student in all_results.items() for s in by_student]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (dataset, student) in zip(axes[0], panels, strict=True):
        entry = all_results[dataset][student]
        for strategy, s in entry["strategies"].items():
            ax.plot(s["labels"], s["accuracy"], label=strategy, linewidth=1.4)
        ax.axhline(entry["ceiling"], color="black", linestyle="--", linewidth=0.8, label="full data")
        ax.set_title(f"{dataset} / {student}")
        ax.set_xlabel("teacher labels bought")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="bbc-news,reuters-r8,20newsgroups")
    parser.add_argument("--students", default="logreg,gbdt")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--tag", default="", help="suffix of the output files")
    parser.add_argument("--report", nargs="+", type=Path, help="only print the tables of earlier JSON results")
    parser.add_argument("--finetune-study", metavar="DATASET", help="only run the fine-tuned student study")
    parser.add_argument("--fewer-calls", action="store_true", help="the pass of benchmarks/fewer_calls.py: free "
                        "labels from the pool, cold starts, the autopilot, small-text's BreakingTies")
    parser.add_argument("--setups", help="with --fewer-calls: which setups (default: all; `timings`: only the round "
                        "and write timings)")
    args = parser.parse_args()
    if args.fewer_calls:
        import fewer_calls

        if args.report:
            fewer_calls.reprint(args.report)
            return
        OUT.mkdir(parents=True, exist_ok=True)
        if args.setups == "timings":
            (OUT / f"fewer_calls-timings{args.tag}.json").write_text(
                json.dumps(fewer_calls.timings(project_for), indent=1))
            return
        fewer_calls.run(args.datasets.split(","), args.seeds,
                        args.setups.split(",") if args.setups else list(fewer_calls.SETUPS), args.tag, project_for)
        return
    if args.report:
        for path in args.report:
            for dataset, by_student in json.loads(path.read_text())["curves"].items():
                for student, entry in by_student.items():
                    report(f"{dataset} / {student}", entry["ceiling"], entry["strategies"])
        return
    OUT.mkdir(parents=True, exist_ok=True)
    if args.finetune_study:
        study = finetune_study(args.finetune_study)
        (OUT / f"finetune_study{args.tag}.json").write_text(json.dumps(study, indent=1))
        return
    all_results: dict[str, Any] = {}
    for dataset in args.datasets.split(","):
        print(f"== {dataset}")
        project = project_for(dataset)
        with project:
            all_results[dataset] = {}
            for student in args.students.split(","):
                if student == "gbdt" and dataset == "20newsgroups":
                    continue  # 20 one-vs-rest tree ensembles per fit: hours on 2 cores; see docs/benchmarks.md
                strategies = GBDT_STRATEGIES if student == "gbdt" else tuple(STRATEGIES)
                top = ceiling(project, student)
                results = {}
                for strategy in strategies:
                    started = time.perf_counter()
                    results[strategy] = [run_curve(project, strategy, student, seed, BUDGETS[dataset])
                                         for seed in range(args.seeds)]
                    print(f"  {student}/{strategy}: {args.seeds} seeds in {time.perf_counter() - started:.0f}s",
                          flush=True)
                summary = summarize(results)
                report(f"{dataset} / {student}", top, summary)
                all_results[dataset][student] = {"ceiling": top, "strategies": summary}
                # Saved as it goes: an interrupted benchmark keeps what it measured.
                (OUT / f"learning_curves{args.tag}.json").write_text(json.dumps({"curves": all_results}, indent=1))
    extra: dict[str, Any] = {}
    if not args.skip_scaling:
        extra["selection_scaling"] = selection_scaling()
        with project_for(args.datasets.split(",")[0]) as project:
            extra["finetune_scoring"] = finetune_scoring_cost(project)
    out = OUT / f"learning_curves{args.tag}.json"
    out.write_text(json.dumps({"curves": all_results, **extra}, indent=1))
    plot(all_results, OUT / f"learning_curves{args.tag}.png")
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
