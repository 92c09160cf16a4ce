"""Does the check sample's macro-F1 interval hold the truth? Repeated draws from populations whose macro F1 is known.

    .venv/bin/python benchmarks/f1_interval.py                  # the grid below, 400 draws a cell
    .venv/bin/python benchmarks/f1_interval.py --draws 100      # a quick look
    .venv/bin/python benchmarks/f1_interval.py --corpora        # real students on real corpora instead

Each population holds 20,000 documents with a gold label and a student's answer: k labels, balanced or long-tailed
(label shares falling geometrically tenfold from the commonest to the rarest), the student right on a given share,
its mistakes spread over the other labels. Its macro F1 over the whole population is the truth. Then, many times over,
n documents are drawn as the check sample and the interval `kdstudio check` gives for macro F1 is made on them
(`kdstudio.estimates.bootstrap_macro_f1`, bias-corrected), beside the plain percentile interval it replaced, from the
same resamples. Printed: how often each 95% interval holds the truth (coverage; the issue asks at least 0.93 of the
accuracy's), its mean width, and the share of draws in which some label of the population has fewer than
`THIN` checked documents (`kdstudio.check` then says so beside the figure), with the coverage in those draws.
With `--corpora`, the populations are those of check_estimates.py instead: a student distilled for real from each
teacher on bbc-news (5 labels), Reuters R8 (8, long-tailed) and 20newsgroups (20), and the pool documents it never
saw, with their gold labels.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kdstudio.check import THIN
from kdstudio.estimates import bootstrap_macro_f1, macro_f1, macro_f1_resamples

POPULATION = 20_000
RESAMPLES = 400  # as kdstudio.check.F1_RESAMPLES
GRID = [  # labels, the student's accuracy, long-tailed
    (3, 0.5, False), (5, 0.95, False), (5, 0.75, False), (8, 0.85, True), (20, 0.6, False), (52, 0.85, True)]
SIZES = (50, 100, 200)


def population(rng: np.random.Generator, k: int, accuracy: float, long_tail: bool) -> tuple[np.ndarray, np.ndarray]:
    shares = np.geomspace(1, 0.1, k) if long_tail else np.ones(k)
    gold = rng.choice(k, POPULATION, p=shares / shares.sum())
    wrong = rng.random(POPULATION) > accuracy
    answer = gold.copy()
    answer[wrong] = (gold[wrong] + rng.integers(1, k, int(wrong.sum()))) % k
    return gold, answer


def cell(rng: np.random.Generator, gold: np.ndarray, answer: np.ndarray, k: int, n: int, draws: int
         ) -> dict[str, float]:
    """`draws` check samples of n from one population (labels coded 0..k-1): each interval's coverage and width."""
    truth = macro_f1(gold, answer)
    hits = {"percentile": 0, "bias-corrected": 0}
    widths = {"percentile": 0.0, "bias-corrected": 0.0}
    thin, thin_hits = 0, 0
    for i in range(draws):
        drawn = rng.choice(len(gold), n, replace=False)
        y, p = gold[drawn], answer[drawn]
        shipped = bootstrap_macro_f1(y, p, "gold", reps=RESAMPLES, seed=i)
        low, high = np.quantile(macro_f1_resamples(y, p, RESAMPLES, seed=i), [0.025, 0.975])
        for name, (lo, hi) in {"percentile": (low, high), "bias-corrected": (shipped.low, shipped.high)}.items():
            hits[name] += lo <= truth <= hi
            widths[name] += hi - lo
        if np.bincount(y, minlength=k).min() < THIN:
            thin += 1
            thin_hits += shipped.covers(truth)
    return {"truth": truth, **{f"{name} coverage": hits[name] / draws for name in hits},
            **{f"{name} width": widths[name] / draws for name in widths}, "thin": thin / draws,
            "thin coverage": thin_hits / thin if thin else float("nan"),
            "full coverage": (hits["bias-corrected"] - thin_hits) / (draws - thin) if draws > thin else float("nan")}


def row(first: str, r: dict[str, float]) -> str:
    return (f"{first}  {r['truth']:.3f}    {r['percentile coverage']:.3f} / {r['percentile width']:.3f}  "
            f"{r['bias-corrected coverage']:.3f} / {r['bias-corrected width']:.3f}           {r['thin']:>5.0%}"
            f"            {r['thin coverage']:.3f}  {r['full coverage']:.3f}")


def synthetic(rng: np.random.Generator, draws: int) -> None:
    print("  labels  accuracy  tail    n  true F1   percentile     bias-corrected (shipped)   thin  coverage: "
          "thin  the rest")
    for k, accuracy, long_tail in GRID:
        gold, answer = population(rng, k, accuracy, long_tail)
        for n in SIZES:
            print(row(f"  {k:>6}  {accuracy:>8.2f}  {'long' if long_tail else 'flat':>4}  {n:>3}",
                      cell(rng, gold, answer, k, n, draws)), flush=True)


def corpora(rng: np.random.Generator, draws: int, seed: int) -> None:
    import check_estimates

    print("  corpus        teacher          labels    n  true F1   percentile     bias-corrected (shipped)   thin  "
          "coverage: thin  the rest")
    for dataset in ("bbc-news", "reuters-r8", "20newsgroups"):
        with check_estimates.project_for(dataset) as project:
            code = {label: i for i, label in enumerate(project.labels)}
            for teacher in check_estimates.TEACHERS:
                _, _, predicted, truth = check_estimates.student_population(project, teacher, seed)
                gold, answer = np.array([code[x] for x in truth]), np.array([code[x] for x in predicted])
                for n in SIZES:
                    print(row(f"  {dataset:<12}  {teacher:<14}  {len(code):>6}  {n:>3}",
                              cell(rng, gold, answer, len(code), n, draws)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpora", action="store_true", help="real students on real corpora instead of the grid")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(f"{args.draws} draws a cell; coverage / mean width of the 95% interval; 'thin': draws where some label has "
          f"fewer than {THIN} checked documents")
    if args.corpora:
        corpora(rng, args.draws, args.seed)
    else:
        synthetic(rng, args.draws)
    print(f"\n{time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
