"""Do the check sample's intervals tell the truth, and how much does PPI buy? Repeated draws on real corpora.

    .venv/bin/python benchmarks/check_estimates.py                               # three corpora, two teachers
    .venv/bin/python benchmarks/check_estimates.py --datasets bbc-news --draws 200   # a quick look
    .venv/bin/python benchmarks/check_estimates.py --ceiling     # how far any proxy from these signals could go, on
                                                                  # a random check sample and on one drawn by doubt
    .venv/bin/python benchmarks/check_estimates.py --by-doubt    # what a check sample drawn by the student's doubt
                                                                  # would give, with nothing fitted on gold

Per corpus and teacher: a student is distilled from the teacher (a real run, 200 labels, margin), then the documents it
never saw (the rest of the pool) are its population, with gold labels standing in for people. The student's true
accuracy there is known. Then, many times over: n documents are drawn as the check sample (n = 50, 100, 200), 200
others as the teacher-labelled validation documents (the most a run with `val_limit auto` buys) and N more as the
unchecked documents whose student answers PPI borrows (N = 200, 1,000, 5,000, or what the population holds: in a
project, the validation split beyond the run's own and the check sample's unlabelled documents, at most 5,000). The
sample's Wilson interval and PPI++'s are computed exactly as `kdstudio check` computes them, PPI three ways: on whether
the student agrees with the teacher (the proxy kdstudio used until 2026-12-05), on the teacher's probability for the
student's answer (`teacher_belief`, used from 2026-12-05), and on that together with the student's own confidence on
the N others (what it uses now); all three with today's interval, Wilson's at PPI's effective sample size. Printed: how
often each 95% interval holds the true accuracy (coverage, the target is at least 0.93), and that of the interval
`kdstudio check` shows (the narrower of the sample's and PPI's, PPI's only from 100 checked documents), their mean
widths, and how much narrower PPI's are. Teachers: simulated with difficulty noise 0.2 (wrong mostly on hard documents)
whose confidences tell right from wrong about as weakly as an LLM's (as in method_matrix.py), and the real offline
zero-shot teacher. Encoder: the static one (fast enough to embed whole corpora here; the estimators do not depend on
it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.check import PPI_MIN_CHECKED, narrower, teacher_belief
from kdstudio.estimates import Estimate, Proxy, ppi_mean, wilson, wilson_bounds
from kdstudio.interfaces import Doc
from kdstudio.loop import DistillConfig
from kdstudio.plugins import get_plugins
from kdstudio.project import Project
from kdstudio.steps import teach_context
from kdstudio.store import Ledger, RunLabel

OUT = Path("benchmarks/out")
TEACHERS: dict[str, tuple[str, dict[str, Any]]] = {
    "difficulty-20": ("oracle", {"noise": 0.2, "noise_mode": "difficulty", "confidence_signal": 0.4,
                                 "runner_up_right": 0.5}),
    "zeroshot": ("zeroshot", {}),
}
SIZES = (50, 100, 200)
ANSWERED = 200  # teacher-labelled validation documents PPI borrows the teacher's belief from
BORROWED = (200, 1000, 5000)  # unchecked documents it borrows the student's confidence from
PROXIES = ("agreement", "belief", "both")
ACTIVE_N = 100  # the checked labels the 25% target is set at
MIXES = (0.2, 0.5)  # the share of a drawn-by-doubt check sample drawn uniformly
STRATA = 5  # equal-sized strata of the student's confidence, for a stratified check sample


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


def teacher_answers(project: Project, teacher: str, ids: list[str]) -> list[RunLabel | None]:
    """The teacher's answer for every document, asked directly (both teachers here are free)."""
    name, options = TEACHERS[teacher]
    plugin = get_plugins().get("teacher", name).cls(**options)
    gold = project.store.gold()
    context = teach_context(Ledger(project.store), plugin, 0, project.labels,
                            {x.name: x.description for x in project.config.labels}, gold,
                            vectors=lambda d: project.store.vectors(project.vector_key, d),
                            encode=project.embedder.encode, embedding_model=project.vector_key)
    answers = {a.doc_id: RunLabel(a.doc_id, a.label, "teacher", a.confidence, a.probs) for a in plugin.label(
        [Doc(d, t) for d, t in zip(ids, project.store.texts(ids), strict=True)], context) if a.label is not None}
    return [answers.get(d) for d in ids]


def student_population(project: Project, teacher: str, seed: int
                       ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """A student distilled from the teacher for real (margin, 200 labels), and its population: the pool documents it
    never saw, with its probabilities, its answers and their gold labels."""
    name, options = TEACHERS[teacher]
    result = project.distill(DistillConfig(teacher=name, teacher_options=options, selector="margin", seed_size=20,
                                           batch=20, budget_labels=200, val_limit=50, seed=seed))
    student, _ = project.load_student()
    trained = {s["id"] for r in project.rounds(result.run_id) for s in (r.selected or [])}
    gold = project.store.gold()
    ids = [d for d in project.store.ids_in_split("pool") if d not in trained and d in gold]
    probs = student.predict_proba(project.store.vectors(project.vector_key, ids))
    return ids, probs, np.array(project.labels)[probs.argmax(axis=1)], np.array([gold[d] for d in ids])


def measure(project: Project, dataset: str, teacher: str, draws: int, seed: int, ceiling: bool = False,
            by_doubt: bool = False) -> dict[str, Any]:
    ids, probs, predicted, truth = student_population(project, teacher, seed)
    answers = teacher_answers(project, teacher, ids)
    said = np.array([None if a is None else a.label for a in answers], dtype=object)
    right = predicted == truth
    proxies = {"agreement": (predicted == said).astype(float),
               "belief": np.array([0.0 if a is None else teacher_belief(a, p, len(project.labels))
                                   for a, p in zip(answers, predicted, strict=True)]),
               "confidence": probs.max(axis=1)}
    true_accuracy = float(right.mean())
    correlation = {name: float(np.corrcoef(right, f)[0, 1]) for name, f in proxies.items()}
    if ceiling:
        return {"dataset": dataset, "teacher": teacher, "population": len(ids), "student_accuracy": true_accuracy,
                "correlation": correlation, "ceiling": proxy_ceiling(right, probs, proxies, seed)}
    rng = np.random.default_rng(seed)
    if by_doubt:
        return {"dataset": dataset, "teacher": teacher, "population": len(ids), "student_accuracy": true_accuracy,
                "draws": draws, "by_doubt": [draw_by_doubt(rng, right, proxies["confidence"], proxies["belief"], n,
                                                           draws)
                                             for n in SIZES]}
    rows = [draw_intervals(rng, right, proxies, n, big_n, draws)
            for n in SIZES for big_n in sorted({min(b, len(ids) - n - ANSWERED) for b in BORROWED})]
    return {"dataset": dataset, "teacher": teacher, "population": len(ids), "student_accuracy": true_accuracy,
            "teacher_accuracy": float(np.mean(said == truth)), "agreement": float(proxies["agreement"].mean()),
            "correlation": correlation,
            "draws": draws, "rows": rows}


def proxy_ceiling(right: np.ndarray, probs: np.ndarray, proxies: dict[str, np.ndarray], seed: int
                  ) -> dict[str, dict[str, float]]:
    """How much any proxy built from these signals could narrow PPI's interval: models of "the student is right"
    (linear and logistic regression on the signals and their logits, and gradient-boosted trees; predictions out of
    fold over the whole population, the best of the three kept) from the student's probabilities alone (what PPI can
    borrow on thousands of documents), and with the teacher's answer added (as if the teacher had answered every
    borrowed document, which a run pays for on 200). Their R² over the share's variance bounds what PPI gains: with
    unlimited borrowed documents the interval is sqrt(1 - R²) as wide as the sample's."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-4, 1 - 1e-4)
        return np.log(p / (1 - p))

    top = np.sort(probs, axis=1)[:, ::-1]
    student = np.column_stack([top[:, 0], logit(top[:, 0]), top[:, 0] - top[:, 1],
                               -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(1)])
    signals = {"student": student, "student + teacher": np.column_stack(
        [student, proxies["belief"], logit(proxies["belief"]), proxies["agreement"]])}
    models = [LinearRegression(), make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
              HistGradientBoostingClassifier(max_iter=100, learning_rate=0.05, max_depth=3, min_samples_leaf=50,
                                             random_state=seed)]
    folds = KFold(5, shuffle=True, random_state=seed)
    out = {}
    for name, features in signals.items():
        r2, best = 0.0, np.full(len(right), right.mean())
        for model in models:
            # Shuffled folds: the population is in document-id order, which sorts some corpora by class.
            guess = (cross_val_predict(model, features, right.astype(float), cv=folds) if isinstance(
                model, LinearRegression) else cross_val_predict(model, features, right, cv=folds,
                                                                method="predict_proba")[:, 1])
            fit = 1 - float(np.mean((right - guess) ** 2)) / float(np.var(right))
            if fit > r2:
                r2, best = fit, np.clip(guess, 0.0, 1.0)
        out[name] = {"r2": r2, "narrower": 1 - float(np.sqrt(1 - r2)),
                     **{f"{key}@{ACTIVE_N}": value for key, value in active_ceiling(right, best, ACTIVE_N).items()}}
    return out


def active_ceiling(right: np.ndarray, guess: np.ndarray, n: int) -> dict[str, float]:
    """How much narrower than a simple random sample of n a check sample drawn with unequal, known probabilities could
    be (active inference, Zrnic and Candès 2024: document i checked with probability pi_i proportional to
    sqrt(g(1 - g)), g the proxy's chance that the student is right on it, and the estimate
    mean(g) + mean((y - g) x checked / pi), unbiased for any positive pi). Variances are exact for Poisson sampling,
    from the population's gold residuals, against the same estimator with pi = n/N everywhere (PPI's ceiling on a
    random sample) and against the sample's own mean. An upper bound again: g was fitted on gold."""
    big_n = len(right)
    spread = np.sqrt(np.clip(guess * (1 - guess), 1e-4, None))
    pi = np.full(big_n, n / big_n)
    for _ in range(20):  # water-filling: no document above certainty, the rest share what is left
        capped = pi >= 1.0
        pi = np.where(capped, 1.0, (n - capped.sum()) * spread / spread[~capped].sum())
        if (pi <= 1.0).all():
            break
    pi = np.clip(pi, 1e-12, 1.0)
    residual = (right - guess) ** 2
    sample = float(right.var()) / n * (big_n - n) / (big_n - 1)
    uniform = float(np.sum(residual * (big_n / n - 1))) / big_n ** 2
    active = float(np.sum(residual * (1 - pi) / pi)) / big_n ** 2
    return {"ppi": 1 - float(np.sqrt(uniform / sample)), "active": 1 - float(np.sqrt(active / sample))}


def ppi_or(sample: Estimate, right: np.ndarray, proxies: list[Proxy]) -> Estimate:
    """PPI's estimate, or where no proxy varies in this draw (a student that agrees with its teacher on every drawn
    document), the sample's, as `kdstudio check` falls back to."""
    try:
        return ppi_mean(right, proxies, "gold")
    except ValueError:
        return sample


def draw_intervals(rng: np.random.Generator, right: np.ndarray, proxies: dict[str, np.ndarray], n: int, big_n: int,
                   draws: int) -> dict[str, Any]:
    """`draws` times: n checked documents, ANSWERED the teacher answered and big_n other borrowed ones; each
    interval's coverage and mean width."""
    truth = float(right.mean())
    hits = dict.fromkeys(("sample", *PROXIES, "shown"), 0)
    widths: dict[str, list[float]] = {key: [] for key in hits}
    for _ in range(draws):
        chosen = rng.choice(len(right), n + ANSWERED + big_n, replace=False)
        checked, answered, others = chosen[:n], chosen[n:n + ANSWERED], chosen[n + ANSWERED:]
        teacher = {name: Proxy.of("teacher", proxies[name][checked], proxies[name][answered])
                   for name in ("agreement", "belief")}
        student = Proxy.of("student", proxies["confidence"][checked], proxies["confidence"][others])
        sample = wilson(int(right[checked].sum()), n, "gold")
        estimates = {"sample": sample,
                     "agreement": ppi_or(sample, right[checked], [teacher["agreement"]]),
                     "belief": ppi_or(sample, right[checked], [teacher["belief"]]),
                     "both": ppi_or(sample, right[checked], [teacher["belief"], student])}
        # What `kdstudio check` shows: the narrower of the two, PPI's only from PPI_MIN_CHECKED checked documents.
        estimates["shown"] = (narrower(estimates["sample"], estimates["both"]) if n >= PPI_MIN_CHECKED
                              else estimates["sample"])
        for key, estimate in estimates.items():
            hits[key] += estimate.covers(truth)
            widths[key].append(estimate.width)
    mean_width = {key: float(np.mean(values)) for key, values in widths.items()}
    return {"n": n, "borrowed": big_n, "coverage": {key: hits[key] / draws for key in hits}, "width": mean_width,
            "narrower": {name: 1 - mean_width[name] / mean_width["sample"] for name in PROXIES}}


def draw_by_doubt(rng: np.random.Generator, right: np.ndarray, confidence: np.ndarray, belief: np.ndarray, n: int,
                  draws: int) -> dict[str, Any]:
    """What a check sample drawn where the student doubts itself would give a user, with nothing fitted on gold:
    each population document checked with probability pi = MIX x n/N + (1 - MIX) x n x s / sum(s), where
    s = sqrt(c(1 - c)) and c is the student's own confidence (its top probability, uncalibrated); the uniform share
    keeps every weight bounded (Poisson sampling: n checked on average). Estimated with the student's confidence as
    PPI's proxy, then with the teacher's belief as well (on ANSWERED random documents the teacher labelled, as a
    run's validation documents); and a sample stratified by that confidence instead. Each against the sample's own
    Wilson interval on a simple random sample of n, in the same run."""
    big_n, truth = len(right), float(right.mean())
    sample = [wilson(int(right[rng.choice(big_n, n, replace=False)].sum()), n, "gold") for _ in range(draws)]
    sample_width = float(np.mean([e.width for e in sample]))
    row: dict[str, Any] = {"n": n, "sample": {"coverage": float(np.mean([e.covers(truth) for e in sample])),
                                              "width": sample_width}}

    def summary(drawn: list[tuple[float, float, float]]) -> dict[str, float]:
        width = float(np.mean([high - low for _, low, high in drawn]))
        return {"coverage": float(np.mean([low <= truth <= high for _, low, high in drawn])), "width": width,
                "narrower": 1 - width / sample_width}

    spread = np.sqrt(np.clip(confidence * (1 - confidence), 1e-4, None))
    for mix in MIXES:
        pi = np.minimum(1.0, mix * n / big_n + (1 - mix) * n * spread / spread.sum())
        row[f"mix {mix:.1f}"] = summary([estimate_by_doubt(right, confidence, pi, rng.random(big_n) < pi)
                                         for _ in range(draws)])
        drawn = []
        for _ in range(draws):
            checked = rng.random(big_n) < pi
            answered = rng.choice(np.flatnonzero(~checked), ANSWERED, replace=False)
            drawn.append(estimate_by_doubt(right, confidence, pi, checked, belief, answered))
        row[f"mix {mix:.1f} + teacher"] = summary(drawn)
    strata = np.searchsorted(np.quantile(confidence, np.linspace(0, 1, STRATA + 1)[1:-1]), confidence)
    row["strata"] = summary([estimate_stratified(right, confidence, strata, n, rng) for _ in range(draws)])
    return row


def estimate_stratified(right: np.ndarray, confidence: np.ndarray, strata: np.ndarray, n: int,
                        rng: np.random.Generator) -> tuple[float, float, float]:
    """A sample stratified by the student's confidence (STRATA equal-sized strata), half of it allocated in proportion
    to the strata's sizes and half in proportion to sqrt(c(1 - c)) of their mean confidence (Neyman's allocation, with
    the student's confidence standing in for the strata's unknown accuracy), at least two a stratum; the estimate is
    the strata's shares times their sample means, which needs nothing outside the sample (no document a later run
    trains on enters it), with Wilson's interval at the effective sample size."""
    sizes = np.bincount(strata, minlength=STRATA)
    share = np.array([np.sqrt(max(m * (1 - m), 1e-4)) for m in
                      (confidence[strata == h].mean() for h in range(STRATA))]) * sizes
    want = np.maximum(2, np.round(n * (0.5 * sizes / sizes.sum() + 0.5 * share / share.sum()))).astype(int)
    value = variance = 0.0
    for h in range(STRATA):
        members = np.flatnonzero(strata == h)
        y = right[rng.choice(members, min(want[h], len(members)), replace=False)].astype(float)
        weight = len(members) / len(right)
        value += weight * y.mean()
        variance += weight ** 2 * y.var(ddof=1) / len(y) * (1 - len(y) / len(members))
    effective = value * (1 - value) / variance if variance > 0 else float(n)
    low, high = wilson_bounds(value, max(effective, 1.0))
    return value, low, high


def estimate_by_doubt(right: np.ndarray, confidence: np.ndarray, pi: np.ndarray, checked: np.ndarray,
                      belief: np.ndarray | None = None, answered: np.ndarray | None = None
                      ) -> tuple[float, float, float]:
    """PPI with known inclusion probabilities (Zrnic and Candès 2024): lambda x mean(f) + the sum over the checked
    documents of (y - lambda x f) / pi, over N, unbiased for any lambda. f is the student's confidence, whose mean over
    the population is known, and with `belief` also the teacher's belief in the student's answer, whose mean is
    estimated on the `answered` documents (a random sample the teacher labelled). lambda minimises the estimated
    variance (Poisson sampling, plus the answered mean's), and the interval is Wilson's at the effective sample size,
    as `kdstudio check` makes PPI's."""
    big_n = len(right)
    proxies = [confidence] if belief is None else [confidence, belief]
    f = np.column_stack([x[checked] for x in proxies])
    means = np.array([confidence.mean()] + ([] if belief is None else [belief[answered].mean()]))
    extra = np.diag([0.0] + ([] if belief is None else [float(belief[answered].var(ddof=1)) / len(answered)]))
    y, p = right[checked].astype(float), pi[checked]
    weight = (1 - p) / p ** 2 / big_n ** 2
    lam = np.linalg.lstsq((f * weight[:, None]).T @ f + extra, (f * weight[:, None]).T @ y, rcond=None)[0]
    residual = y - f @ lam
    value = min(max(float(lam @ means) + float(np.sum(residual / p)) / big_n, 0.0), 1.0)
    variance = float(np.sum(weight * residual ** 2) + lam @ extra @ lam)
    effective = value * (1 - value) / variance if variance > 0 else float(len(y))
    low, high = wilson_bounds(value, max(effective, 1.0))
    return value, low, high


def print_result(r: dict[str, Any]) -> None:
    if "by_doubt" in r:
        print(f"  {r['dataset']}, teacher {r['teacher']}: student accuracy {r['student_accuracy']:.3f} (gold) on "
              f"{r['population']} documents; {r['draws']} draws; a random sample against one drawn by the student's "
              "doubt (MIX: the share drawn uniformly)")
        for row in r["by_doubt"]:
            print(f"    n {row['n']:>3}  random sample: coverage {row['sample']['coverage']:.3f} width "
                  f"{row['sample']['width']:.3f}  " + "  ".join(
                      f"{key}: coverage {v['coverage']:.3f} width {v['width']:.3f} ({v['narrower']:+.1%})"
                      for key, v in row.items() if key not in ("n", "sample")))
        return
    if "ceiling" in r:
        print(f"  {r['dataset']}, teacher {r['teacher']}: student accuracy {r['student_accuracy']:.3f} (gold) on "
              f"{r['population']} documents; the best proxy's R² and PPI's ceiling (narrower than the sample alone, "
              "unlimited borrowed documents): " + "; ".join(
                  f"{name} {c['r2']:.2f}, {c['narrower']:.1%}" for name, c in r["ceiling"].items()))
        print(f"    at {ACTIVE_N} checked labels, narrower than the sample alone: " + "; ".join(
            f"{name}: PPI on a random sample {c[f'ppi@{ACTIVE_N}']:.1%}, drawn by the proxy's doubt "
            f"{c[f'active@{ACTIVE_N}']:.1%}" for name, c in r["ceiling"].items()))
        print("    correlation with the student being right: " + ", ".join(
            f"{name} {value:.2f}" for name, value in r["correlation"].items()))
        return
    print(f"\n{r['dataset']}, teacher {r['teacher']}: population {r['population']} documents the student never saw; "
          f"student accuracy {r['student_accuracy']:.3f} (gold), teacher {r['teacher_accuracy']:.3f}, "
          f"student-teacher agreement {r['agreement']:.3f}; {r['draws']} draws")
    print("  correlation with the student being right: " + ", ".join(
        f"{name} {value:.2f}" for name, value in r["correlation"].items()))
    print("     n     N  coverage: sample  agree belief   both  shown   width: sample  agree belief   both   "
          "PPI narrower: agree  belief    both")
    for row in r["rows"]:
        cover, width, narrower_by = row["coverage"], row["width"], row["narrower"]
        covers = "  ".join(f"{cover[key]:.3f}" for key in ("sample", *PROXIES, "shown"))
        widths = "  ".join(f"{width[key]:.3f}" for key in ("sample", *PROXIES))
        narrowers = "  ".join(f"{narrower_by[name]:+6.1%}" for name in PROXIES)
        print(f"  {row['n']:>4}  {row['borrowed']:>4}            {covers}          {widths}                {narrowers}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["bbc-news", "reuters-r8", "20newsgroups"])
    parser.add_argument("--teachers", nargs="+", default=list(TEACHERS))
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ceiling", action="store_true",
                        help="instead of the draws: how much any proxy from these signals could narrow PPI")
    parser.add_argument("--by-doubt", action="store_true",
                        help="instead: a check sample drawn where the student doubts itself, against a random one")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for dataset in args.datasets:
        print(f"{dataset}:", flush=True)
        with project_for(dataset) as project:
            for teacher in args.teachers:
                results.append(measure(project, dataset, teacher, args.draws, args.seed, args.ceiling,
                                       args.by_doubt))
                print_result(results[-1])
                sys.stdout.flush()
    path = OUT / f"check-estimates-{int(time.time())}.json"
    path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
