from __future__ import annotations

import numpy as np
import pytest

from kdstudio.interfaces import LabelledSet
from kdstudio.plugins import Plugins
from kdstudio.pool_view import PoolView as _Pool
from kdstudio.uncertainty import entropy, least_confidence, margin, uncertainty

PLUGINS = Plugins.load()
ALL = ["random", "least-confidence", "margin", "entropy", "mraru", "diversity", "llkd", "cluster-margin"]


class TableStudent:
    """A student whose probabilities are a fixed table indexed by the pool position stored in the features."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.probs[X[:, 0].astype(int)]


def make_pool(n: int = 400, k: int = 4, seed: int = 0, student: bool = True, labelled: int = 0):
    rng = np.random.default_rng(seed)
    sharpness = rng.uniform(0.2, 8.0, size=n)
    logits = rng.normal(size=(n, k)) * sharpness[:, None]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    vectors = rng.normal(size=(n + labelled, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.array([f"d{i}" for i in range(n)], dtype=object)
    position = {f"d{i}": i for i in range(n)}
    position.update({f"l{i}": n + i for i in range(labelled)})

    def features(chunk: list[str]) -> np.ndarray:
        return np.array([[position[c]] for c in chunk], dtype=float)

    def vecs(chunk: list[str]) -> np.ndarray:
        return vectors[[position[c] for c in chunk]] if len(chunk) else np.zeros((0, 16), dtype=np.float32)

    pool = _Pool(ids, features, vecs, [f"l{i}" for i in range(labelled)],
                 TableStudent(probs) if student else None, [f"c{i}" for i in range(k)], 1,
                 np.random.default_rng(seed))
    return pool, probs, vectors


def test_uncertainty_measures_are_normalized():
    uniform = np.full((1, 4), 0.25)
    certain = np.array([[1.0, 0, 0, 0]])
    for fn in (margin, entropy, least_confidence):
        assert fn(uniform)[0] == pytest.approx(1.0)
        assert fn(certain)[0] == pytest.approx(0.0, abs=1e-9)
    assert margin(np.array([[0.5, 0.4, 0.1]]))[0] == pytest.approx(0.9)
    with pytest.raises(ValueError):
        uncertainty(uniform, "vibes")


@pytest.mark.parametrize("name", ALL)
def test_every_selector_returns_k_distinct_pool_positions(name: str):
    pool, _, _ = make_pool(labelled=5)
    choice = PLUGINS.get("selector", name).cls().select(pool, 20)
    assert len(choice.positions) == len(set(choice.positions)) == 20
    assert all(0 <= p < pool.n_pool for p in choice.positions)
    assert len(choice.scores) == 20
    again, _, _ = make_pool(labelled=5)
    assert PLUGINS.get("selector", name).cls().select(again, 20).positions == choice.positions  # seeded


@pytest.mark.parametrize("name", ["least-confidence", "margin", "entropy", "mraru", "llkd", "cluster-margin"])
def test_uncertainty_selectors_fall_back_to_random_without_a_student(name: str):
    pool, _, _ = make_pool(student=False)
    choice = PLUGINS.get("selector", name).cls().select(pool, 10)
    assert len(choice.positions) == 10 and choice.scored == 0


@pytest.mark.parametrize(("name", "measure"), [("margin", margin), ("entropy", entropy),
                                               ("least-confidence", least_confidence)])
def test_whole_pool_selectors_take_the_top_of_their_measure(name: str, measure):
    pool, probs, _ = make_pool()
    choice = PLUGINS.get("selector", name).cls().select(pool, 15)
    assert set(choice.positions) == set(np.argsort(-measure(probs))[:15])
    assert choice.scored == pool.n_pool


def test_mraru_scores_a_fraction_of_the_pool_and_prefers_uncertain_documents():
    pool, probs, _ = make_pool(n=5000)
    u = margin(probs)
    choice = PLUGINS.get("selector", "mraru").cls().select(pool, 50)
    assert choice.scored < 0.2 * pool.n_pool
    assert pool.scored == choice.scored
    assert u[choice.positions].mean() > u.mean() + 0.1
    relative = PLUGINS.get("selector", "mraru").cls(acceptance="relative")
    pool2, _, _ = make_pool(n=5000)
    sharp = relative.select(pool2, 50)
    assert u[sharp.positions].mean() > u[choice.positions].mean()  # sharper acceptance, more uncertain picks


def test_mraru_fills_the_batch_when_the_student_is_sure_of_everything():
    pool, _, _ = make_pool(n=100)
    pool._student = TableStudent(np.tile([1.0, 0.0, 0.0, 0.0], (100, 1)))
    choice = PLUGINS.get("selector", "mraru").cls().select(pool, 10)
    assert len(set(choice.positions)) == 10 and choice.scored == 100


def test_mraru_stream_on_a_huge_pool_draws_only_what_it_scores():
    from kdstudio_plugins.selectors.mraru import candidate_stream

    stream = candidate_stream(10_000_000, 32, np.random.default_rng(0))
    chunks = [next(stream) for _ in range(5)]
    drawn = np.concatenate(chunks)
    assert len(np.unique(drawn)) == len(drawn) and drawn.max() < 10_000_000


def test_diversity_covers_what_is_not_labelled_yet():
    rng = np.random.default_rng(0)
    centres = np.eye(16, dtype=np.float32)[:4]
    pool_vecs = np.concatenate([c + 0.05 * rng.normal(size=(50, 16)) for c in centres]).astype(np.float32)
    pool_vecs /= np.linalg.norm(pool_vecs, axis=1, keepdims=True)
    labelled = (centres[:2] / np.linalg.norm(centres[:2], axis=1, keepdims=True)).astype(np.float32)
    ids = np.array([f"d{i}" for i in range(200)], dtype=object)
    vectors = {**{f"d{i}": pool_vecs[i] for i in range(200)}, "l0": labelled[0], "l1": labelled[1]}
    pool = _Pool(ids, lambda c: None, lambda c: np.array([vectors[x] for x in c]), ["l0", "l1"], None,
                 ["a", "b"], 1, np.random.default_rng(0))
    for method in ("kcenter", "kmeans++"):
        picks = PLUGINS.get("selector", "diversity").cls(method=method).select(pool, 2).positions
        assert {p // 50 for p in picks} == {2, 3}, method  # the two clusters with nothing labelled


def test_cluster_margin_spreads_its_picks():
    pool, probs, vectors = make_pool(n=600)
    choice = PLUGINS.get("selector", "cluster-margin").cls().select(pool, 10)
    picked = vectors[choice.positions]
    similarity = picked @ picked.T - np.eye(10)
    assert similarity.max() < 0.99  # no near-duplicates among the picks
    assert margin(probs)[choice.positions].mean() > margin(probs).mean()


def test_llkd_thresholds_adapt_and_weights_drop_unreliable_teacher_labels():
    selector = PLUGINS.get("selector", "llkd").cls(momentum=0.5)
    pool, _, _ = make_pool()
    selector.select(pool, 10)
    first = dict(selector.tau_student)
    assert first and all(0 <= t <= 1 for t in first.values())
    selector.select(make_pool(seed=1)[0], 10)
    assert selector.tau_student != first
    labelled = LabelledSet(
        y=np.array([0, 0, 0, 1, 1, 1]),
        confidence=np.array([0.95, 0.9, 0.3, 0.8, 0.85, 0.2]),
        selection_score=np.array([0.5, np.nan, 0.9, 0.4, 0.6, 0.7]),
        human=np.array([False, False, False, False, False, True]),
    )
    weights = selector.training_weights(labelled)
    assert weights[2] == 0.0  # the teacher was unsure: not trained on
    assert weights[5] > 0.0  # a human label always counts
    assert weights[1] > 0.0
    assert weights.sum() == pytest.approx((weights > 0).sum())  # mean weight 1 over the samples kept
    assert weights[0] > weights[3]  # more confident teacher, same class share: weighs more per unit of s
    state = selector.state_dict()
    restored = PLUGINS.get("selector", "llkd").cls(momentum=0.5)
    restored.load_state_dict(state)
    assert restored.tau_student == selector.tau_student and restored.tau_teacher == selector.tau_teacher
