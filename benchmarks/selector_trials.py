"""Selectors tried as auto's selection on the method matrix, and not shipped: each against margin, margin + fused
labels, random and the best fixed setup of method_matrix.py's cells (same corpora, teachers, budgets and seeds).

    .venv/bin/python benchmarks/selector_trials.py --seeds 1                            # the screen (seed 0)
    .venv/bin/python benchmarks/selector_trials.py --setups typical-margin+fused        # 3 seeds
    .venv/bin/python benchmarks/selector_trials.py --report

It needs the matrix's own results (benchmarks/out/method-matrix.jsonl) for the setups it is compared with.
`typical-margin` is defined here, not in plugins/: half of each batch is TypiClust's picks (the most typical document
of the largest clusters no label covers, Hacohen et al. 2022), half the smallest margins, the mix "Active learning on
a budget" argues for when the student is weak. It loads as a plugin of this script's own ($KDSTUDIO_PLUGINS), as a
third party's would.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import method_matrix as matrix
import numpy as np

from kdstudio.hookspecs import hookimpl
from kdstudio.interfaces import Option, Selection, SelectionContext, Selector

TRIALS = {
    "cluster-margin+fused": {"selector": "cluster-margin", "fused_labels": True},
    "typiclust+fused": {"selector": "typiclust", "fused_labels": True},
    "mraru+fused": {"selector": "mraru", "fused_labels": True},
    "typical-margin+fused": {"selector": "typical-margin", "fused_labels": True},
    "auto-tm": {"selector": "typical-margin", "method": "auto"},
}
FIXED = [s for s in matrix.SETUPS if s != "auto"]  # the matrix's fixed setups, before the trials join them
MATRIX = matrix.results()
RESULTS = matrix.OUT / "selector-trials.jsonl"


class TypicalMarginSelector(Selector):
    """Half of each batch by typicality in uncovered clusters, the rest by the smallest margins."""

    name = "typical-margin"
    options = (Option("share", float, 0.5, "share of the batch picked by typicality", low=0.0, high=1.0),)

    def select(self, context: SelectionContext, k: int) -> Selection:
        from kdstudio_plugins.selectors.diversity import TypiClustSelector
        from kdstudio_plugins.selectors.uncertainty import random_selection

        if not context.has_student:
            return random_selection(context, k, "random (no student yet)")
        typical = TypiClustSelector().select(context, round(k * self.share))
        picks, scores = [int(p) for p in typical.positions], list(typical.scores)
        candidates, margins = context.top_uncertain("margin", k + len(picks))
        for position, score in zip(candidates.tolist(), margins.tolist(), strict=True):
            if len(picks) < k and position not in picks:
                picks.append(position)
                scores.append(score)
        return Selection(picks, scores, context.n_pool, {"strategy": "typical-margin"})


@hookimpl
def register_selectors(register):
    register(TypicalMarginSelector)


def report() -> None:
    cells = [json.loads(line) for path in (MATRIX, RESULTS) if path.exists()
             for line in path.read_text().splitlines() if line.strip()]
    by_seed: dict[tuple[str, str, str], dict[int, float]] = {}
    for c in cells:
        if "test_accuracy" in c:
            by_seed.setdefault((c["dataset"], c["teacher"], c["setup"]), {})[c["seed"]] = c["test_accuracy"]
    print("each trial against the matrix's setups on the same cells and the same seeds, in points")
    print(f"  {'setup':<22}{'seeds':>6}{'cells':>6}{'- margin (noisy)':>18}{'- margin+fused':>16}"
          f"{'- best fixed':>14}{'worst':>7}{'< random':>10}")
    for setup in TRIALS:
        seeds = max((len(v) for (d, t, s), v in by_seed.items() if s == setup), default=0)

        def at(dataset: str, teacher: str, name: str, seeds: int = seeds) -> float:
            return float(np.mean([a for seed, a in by_seed[(dataset, teacher, name)].items() if seed < seeds]))

        rows = [(d, t, {s: at(d, t, s) for s in (*FIXED, setup)}) for d in matrix.BUDGET for t in matrix.TEACHERS
                if len(by_seed.get((d, t, setup), {})) == seeds]
        if not rows:
            continue
        noisy = [100 * (row[setup] - row["margin"]) for _, t, row in rows if t != "perfect"]
        fused = [100 * (row[setup] - row["margin+fused"]) for _, _, row in rows]
        best = [100 * (row[setup] - max(row[s] for s in FIXED)) for _, _, row in rows]
        below = sum(row[setup] < row["random"] for _, _, row in rows)
        print(f"  {setup:<22}{seeds:>6}{len(rows):>6}{np.mean(noisy):>+18.2f}{np.mean(fused):>+16.2f}"
              f"{np.mean(best):>+14.2f}{min(best):>+7.1f}{below:>10}")
        for dataset in matrix.BUDGET:
            gaps = [f"{t} {100 * (row[setup] - row['margin+fused']):+.1f}" for d, t, row in rows if d == dataset]
            if gaps:
                print(f"    {dataset:<14}- margin+fused: " + ", ".join(gaps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=list(matrix.BUDGET))
    parser.add_argument("--setups", nargs="*", default=list(TRIALS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="print the comparison from what was measured")
    args = parser.parse_args()
    # kdstudio loads this module as a plugin, as it would a third party's (the script's folder is on sys.path).
    os.environ["KDSTUDIO_PLUGINS"] = Path(__file__).stem
    matrix.SETUPS.update(TRIALS)
    matrix.results = lambda: RESULTS
    if not args.report:
        matrix.OUT.mkdir(parents=True, exist_ok=True)
        matrix.measure(args.datasets, list(matrix.TEACHERS), args.setups, args.seeds)
    report()


if __name__ == "__main__":
    main()
