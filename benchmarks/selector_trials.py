"""Selectors and training tried on the method matrix, most not shipped: each against margin, margin + fused labels,
random and the best fixed setup of method_matrix.py's cells (same corpora, teachers, budgets and seeds).

    .venv/bin/python benchmarks/selector_trials.py --seeds 1                            # the screen (seed 0)
    .venv/bin/python benchmarks/selector_trials.py --setups typical-margin+fused        # 3 seeds
    .venv/bin/python benchmarks/selector_trials.py --datasets bbc-news --setups rm-signal+fused
    .venv/bin/python benchmarks/selector_trials.py --report
    .venv/bin/python benchmarks/selector_trials.py --held-out --setups margin+fused+self-train/gold   # held out

It needs the matrix's own results (benchmarks/out/method-matrix.jsonl) for the setups it is compared with. Three
selectors are defined here, not in plugins/, and load as a plugin of this script's own ($KDSTUDIO_PLUGINS), as a third
party's would. `typical-margin`: half of each batch is TypiClust's picks (the most typical document of the largest
clusters no label covers, Hacohen et al. 2022), half the smallest margins, the mix "Active learning on a budget"
argues for when the student is weak. `reliable-margin`: margin, weighed by how often the teacher is right at each
margin where the gold validation labels clearly say its mistakes gather where the student is unsure; a selector sees
no gold labels, so the script patches the run's referee in (`RUN`). The `/gold` setups validate the free labeller's
threshold on the gold validation labels instead of the teacher's (what auto does since 2026-12-06).
`hedged-margin`: margin with a share of each batch drawn at random, fixed (`hedged-25`, `hedged-50`) or one minus the
student's skill on the referee's labels (`hedged-skill`), so that a student barely above the commonest label picks
mostly at random: the cold start where uncertainty sampling falls below random.
`gated-margin` (`auto-gated`, with method auto): margin, or random wherever the referee's labels cannot tell the
student from a guess, from the first round on: how auto's gate was first tried (docs/benchmarks.md, "Selection while
the student is no better than a guess"); since 2026-12-07 auto itself buys at random there, after ten labels a class.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import method_matrix as matrix
import numpy as np

from kdstudio.hookspecs import hookimpl
from kdstudio.interfaces import Option, Selection, SelectionContext, Selector

if TYPE_CHECKING:
    from kdstudio.method_auto import Referee

TRIALS = {
    "cluster-margin+fused": {"selector": "cluster-margin", "fused_labels": True},
    "typiclust+fused": {"selector": "typiclust", "fused_labels": True},
    "mraru+fused": {"selector": "mraru", "fused_labels": True},
    "typical-margin+fused": {"selector": "typical-margin", "fused_labels": True},
    "auto-tm": {"selector": "typical-margin", "method": "auto"},
    "reliable-margin+fused": {"selector": "reliable-margin", "fused_labels": True},
    "rm-all+fused": {"selector": "reliable-margin", "selector_options": {"candidates": 0}, "fused_labels": True},
    "rm-50+fused": {"selector": "reliable-margin", "selector_options": {"candidates": 50}, "fused_labels": True},
    "rm-steep+fused": {"selector": "reliable-margin", "selector_options": {"candidates": 0, "c": 100.0},
                       "fused_labels": True},
    "rm-signal-10+fused": {"selector": "reliable-margin",
                           "selector_options": {"candidates": 10, "c": 100.0, "value": "signal"}, "fused_labels": True},
    "rm-signal+fused": {"selector": "reliable-margin",
                        "selector_options": {"candidates": 0, "c": 100.0, "value": "signal"}, "fused_labels": True},
    "margin+fused+spread": {"selector": "margin", "fused_labels": True, "free_labels": "spread"},
    "margin+spread": {"selector": "margin", "free_labels": "spread"},
    # The free labeller's confidence threshold validated on the gold validation labels instead of the teacher's
    # (TRUSTED_FREE below): a noisy teacher's labels cap the precision any threshold can show at its own accuracy.
    "margin+fused+self-train/gold": {"selector": "margin", "fused_labels": True, "free_labels": "self-train"},
    "margin+fused+spread/gold": {"selector": "margin", "fused_labels": True, "free_labels": "spread"},
    "hedged-25+fused": {"selector": "hedged-margin", "selector_options": {"share": 0.25}, "fused_labels": True},
    "hedged-50+fused": {"selector": "hedged-margin", "selector_options": {"share": 0.5}, "fused_labels": True},
    "hedged-skill+fused": {"selector": "hedged-margin", "fused_labels": True},
    "auto-gated": {"selector": "gated-margin", "method": "auto"},
    # Self-training's threshold validated for each predicted class on its own validation documents (at least 5 or
    # 10 of them), not on all classes together, whose precision the commonest classes make.
    "auto-cs5": {"selector": "margin", "method": "auto", "free_labels": "self-train",
                 "free_labels_options": {"class_support": 5}},
    "auto-cs10": {"selector": "margin", "method": "auto", "free_labels": "self-train",
                  "free_labels_options": {"class_support": 10}},
    # Where noise_aware + doubt beats auto (bbc-news with the difficulty and zero-shot teachers): doubt on margin's
    # labels, noise_aware's selection without doubt, and auto choosing its training on noise_aware's selection.
    "margin+doubt": {"selector": "margin", "doubt": "cleanlab"},
    "noise_aware": {"selector": "noise_aware"},
    "auto-na": {"selector": "noise_aware", "method": "auto"},
    # The matrix's noise_aware + doubt again, after doubt began to hold out nothing where it and the selector's own
    # weights together would leave no label at all (2026-12-08): every other run is the same to the digit.
    "noise_aware+doubt/again": {"selector": "noise_aware", "doubt": "cleanlab"},
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


# The run a selection is for (steps.select's arguments), which reliable-margin reads its referee from: the trial has
# no interface for it (a SelectionContext shows no gold labels), so the screen patches one in.
RUN: dict[str, Any] = {}


def trusted_referee() -> Referee | None:
    """The run's referee (gold validation labels) where it is trusted and a student has been trained, else None."""
    from kdstudio.training import run_referee

    ctx, state = RUN["ctx"], RUN["state"]
    if state.trained is None:
        return None
    referee = run_referee(ctx, state.trained.labelled)
    return referee if referee is not None and referee.trusted else None


def referee_margins() -> tuple[np.ndarray, np.ndarray] | None:
    """On the run's referee documents (gold validation labels) the teacher answered: the current student's margin
    (p1 - p2) and whether the teacher was right."""
    from kdstudio.uncertainty import margin

    referee = trusted_referee()
    if referee is None:
        return None
    ctx, state = RUN["ctx"], RUN["state"]
    labelled = state.trained.labelled
    known = [(i, d) for i, d in enumerate(referee.ids) if d in labelled and labelled[d].source == "teacher"]
    if len(known) < 10:
        return None
    ids = [d for _, d in known]
    probs = state.trained.student.predict_proba(ctx.features(ids))
    right = np.array([ctx.label_index[labelled[d].label] == referee.y[i] for i, d in known])
    return 1.0 - margin(probs), right


def rank_z(x: np.ndarray, right: np.ndarray) -> float:
    """Mann-Whitney's z that x is larger where the teacher was right (0 where it was always or never right)."""
    from scipy.stats import rankdata

    n1, n0 = int(right.sum()), int((~right).sum())
    if not n1 or not n0:
        return 0.0
    u = rankdata(x)[right].sum() - n1 * (n1 + 1) / 2
    return float((u - n1 * n0 / 2) / np.sqrt(n1 * n0 * (n1 + n0 + 1) / 12))


class ReliableMarginSelector(Selector):
    """Margin, weighed by how often the teacher is right at each margin where the referee's labels clearly say its
    mistakes gather where the student is unsure (a rank test): among the `candidates` x k smallest margins, the k
    with the largest uncertainty x P(teacher right | margin), the latter a logistic fit on the referee documents."""

    name = "reliable-margin"
    options = (Option("evidence", float, 2.0, "z of the rank test that turns the weighing on", low=0.0),
               Option("candidates", int, 10, "candidates per pick, among the smallest margins (0: the whole pool)",
                      low=0),
               Option("c", float, 1.0, "inverse regularization of the logistic fit", low=1e-6),
               Option("value", str, "product", "product: u x r; signal: u x (2r - 1), a label's expected signal "
                                                "where a wrong one pulls as hard the other way", ("product", "signal")))

    def select(self, context: SelectionContext, k: int) -> Selection:
        from sklearn.linear_model import LogisticRegression

        from kdstudio_plugins.selectors.uncertainty import random_selection

        if not context.has_student:
            return random_selection(context, k, "random (no student yet)")
        evidence = referee_margins()
        z = rank_z(*evidence) if evidence else 0.0
        if z < self.evidence or evidence is None:
            positions, scores = context.top_uncertain("margin", k)
            return Selection(positions, scores, context.n_pool, {"strategy": "margin", "z": z})
        x, right = evidence
        fitted = LogisticRegression(C=self.c).fit(x[:, None], right)
        positions, u = context.top_uncertain("margin", k * self.candidates or context.n_pool)
        r = fitted.predict_proba((1.0 - u)[:, None])[:, 1]
        score = u * (r if self.value == "product" else 2 * r - 1)
        top = np.argsort(-score, kind="stable")[:k]
        return Selection(positions[top], score[top], context.n_pool, {"strategy": "reliable-margin", "z": z})


def referee_skill() -> float | None:
    """The current student's skill on the run's referee documents (gold validation labels): its accuracy above
    always answering the referee's commonest label, as a share of the most there is to gain (0: none, 1: all right)."""
    referee = trusted_referee()
    if referee is None or not len(referee.y):
        return None
    ctx, state = RUN["ctx"], RUN["state"]
    right = state.trained.student.predict_proba(ctx.features(referee.ids)).argmax(axis=1) == referee.y
    commonest = np.bincount(referee.y).max() / len(referee.y)
    if commonest >= 1.0:
        return None
    return float(np.clip((right.mean() - commonest) / (1.0 - commonest), 0.0, 1.0))


class HedgedMarginSelector(Selector):
    """Margin with a share of each batch drawn at random: a fixed share, or (share < 0) one minus the student's skill
    on the referee's labels, so that a student whose uncertainty says little (barely above the commonest label)
    picks mostly at random, the cold-start case where uncertainty sampling falls below random."""

    name = "hedged-margin"
    options = (Option("share", float, -1.0, "share of each batch drawn at random (< 0: one minus the skill)",
                      low=-1.0, high=1.0),)

    def select(self, context: SelectionContext, k: int) -> Selection:
        from kdstudio_plugins.selectors.uncertainty import random_selection

        if not context.has_student:
            return random_selection(context, k, "random (no student yet)")
        skill = referee_skill() if self.share < 0 else None
        share = self.share if self.share >= 0 else 1.0 - (1.0 if skill is None else skill)
        n_margin = k - round(k * share)
        positions, scores = context.top_uncertain("margin", n_margin) if n_margin else ([], [])
        picks, values = [int(p) for p in positions], [float(u) for u in scores]
        taken = set(picks)
        extra = [int(p) for p in context.rng.permutation(context.n_pool) if int(p) not in taken][:k - len(picks)]
        return Selection(picks + extra, values + [float("nan")] * len(extra), context.n_pool,
                         {"strategy": "hedged-margin", "random_share": round(share, 3)})


class GatedMarginSelector(Selector):
    """Margin where the referee's labels tell the student from a guess, random where they cannot (its accuracy's 95%
    interval reaches chance or always answering the referee's commonest label): a student no better than a guess has
    uncertainties that mean nothing, the cold start where uncertainty sampling falls below random."""

    name = "gated-margin"

    def select(self, context: SelectionContext, k: int) -> Selection:
        from kdstudio.check import guessing
        from kdstudio.estimates import wilson
        from kdstudio_plugins.selectors.uncertainty import random_selection

        if not context.has_student:
            return random_selection(context, k, "random (no student yet)")
        referee = trusted_referee()
        if referee is not None and len(referee.y) >= 10:
            ctx, state = RUN["ctx"], RUN["state"]
            right = state.trained.student.predict_proba(ctx.features(referee.ids)).argmax(axis=1) == referee.y
            base = max(1 / len(ctx.labels), np.bincount(referee.y).max() / len(referee.y))
            accuracy = wilson(int(right.sum()), len(right), "gold")
            fired = guessing(accuracy, base)
            print(f"gate {RUN.get('setup')} n_pool {context.n_pool} acc {accuracy.value:.3f} low {accuracy.low:.3f} "
                  f"base {base:.3f} -> {'random' if fired else 'margin'}", flush=True)
            if fired:
                return random_selection(context, k, "random (the student cannot be told from a guess)")
        positions, scores = context.top_uncertain("margin", k)
        return Selection(positions, scores, context.n_pool, {"strategy": "margin"})


@hookimpl
def register_selectors(register):
    register(TypicalMarginSelector)
    register(ReliableMarginSelector)
    register(HedgedMarginSelector)
    register(GatedMarginSelector)


def validate_free_labels_on_gold() -> None:
    """Patch the free labeller's task so that its threshold is validated on the validation documents' gold labels,
    for the setups whose name ends in /gold (the run's config does not carry the setup's name: RUN does)."""
    from kdstudio import training
    from kdstudio.interfaces import FreeLabelTask

    original = training.FreeLabelTask

    def task(X, y, weight, n_classes, pool, pool_y, val_X, val_y, fit):
        ctx = RUN["ctx"]
        if RUN.get("setup", "").endswith("/gold"):
            val = [d for d in ctx.val_ids if d in RUN["labelled"]]
            assert len(val) == len(val_y)
            val_y = np.array([ctx.label_index[ctx.gold[d]] for d in val], dtype=np.int64)
        return original(X, y, weight, n_classes, pool, pool_y, val_X, val_y, fit)

    with_free_labels = training._with_free_labels

    def with_labelled(ctx, options, data, *rest):
        RUN["labelled"] = data.labelled
        return with_free_labels(ctx, options, data, *rest)

    training.FreeLabelTask = task
    training._with_free_labels = with_labelled
    assert FreeLabelTask is original


def remember_run() -> None:
    """Patch steps.select to leave its run where reliable-margin can read it, and the matrix's cells to leave the
    setup's name where the /gold setups' free labeller can."""
    from kdstudio import steps

    select, run_cell = steps.select, matrix.run_cell

    def remembering_select(ctx, state):
        RUN["ctx"], RUN["state"] = ctx, state
        return select(ctx, state)

    def named_cell(project, dataset, teacher, setup, seed):
        RUN["setup"] = setup
        return run_cell(project, dataset, teacher, setup, seed)

    steps.select, matrix.run_cell = remembering_select, named_cell


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
        if not seeds:
            continue

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
                print(f"    {dataset:<{matrix.corpus_width()}}- margin+fused: " + ", ".join(gaps))


def main() -> None:
    global MATRIX, RESULTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", action="store_true",
                        help="on method_matrix.py's held-out corpora, against its results there (own results file)")
    parser.add_argument("--datasets", nargs="*")
    parser.add_argument("--setups", nargs="*", default=list(TRIALS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="print the comparison from what was measured")
    args = parser.parse_args()
    if args.held_out:
        matrix.BUDGET.clear()
        matrix.BUDGET.update(matrix.HELD_OUT)
        MATRIX, RESULTS = matrix.results(), matrix.OUT / "selector-trials-held-out.jsonl"
    args.datasets = args.datasets or list(matrix.BUDGET)
    # kdstudio loads this module as a plugin, as it would a third party's (the script's folder is on sys.path).
    os.environ["KDSTUDIO_PLUGINS"] = Path(__file__).stem
    matrix.SETUPS.update(TRIALS)
    import selector_trials  # the module kdstudio loads as the plugin, whose RUN its selectors read

    selector_trials.remember_run()
    selector_trials.validate_free_labels_on_gold()
    matrix.results = lambda: RESULTS
    if not args.report:
        matrix.OUT.mkdir(parents=True, exist_ok=True)
        matrix.measure(args.datasets, list(matrix.TEACHERS), args.setups, args.seeds)
    report()


if __name__ == "__main__":
    main()
