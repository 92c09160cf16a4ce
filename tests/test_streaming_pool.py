"""Selectors that stream (issue 29, first part): no built-in selector but LLKD asks for the whole pool at once, neither
its vectors nor its probabilities; whole-pool uncertainty keeps only its top candidates while it streams, and picks
exactly what ranking the whole pool at once picks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import cheap_slice, fresh_copy

from kdstudio import pool_view
from kdstudio.errors import KdError
from kdstudio.loop import DistillConfig
from kdstudio.pool_view import PoolView
from kdstudio.project import Project
from kdstudio.uncertainty import TopUncertain, tie_jitter, uncertainty


def whole_pool_top_k(scores: np.ndarray, k: int, salt: int) -> np.ndarray:
    """Ranking the whole pool at once: every score, ties broken by each document's jitter."""
    k = min(k, len(scores))
    keyed = scores + tie_jitter(salt, np.arange(len(scores)))
    best = np.argpartition(-keyed, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return best[np.argsort(-keyed[best])]


class Student:
    """Probabilities given in advance, looked up by the rows of the pool view's features."""

    input = "embeddings"

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        return self.probs[rows]


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
@pytest.mark.parametrize("k", [1, 20, 300, 1000])
def test_streamed_ranking_picks_what_ranking_the_whole_pool_picks(chunk: int, k: int,
                                                                  monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pool_view, "CHUNK", chunk)
    rng = np.random.default_rng(chunk * 1000 + k)
    probs = rng.dirichlet(np.ones(4), size=500)
    probs[100:140] = probs[100]  # ties: only the jitter orders them
    keys = np.arange(500)
    for measure in ("margin", "entropy", "least-confidence"):
        view = PoolView(keys, lambda rows: rows, lambda rows: rows, [], Student(probs), ["a", "b", "c", "d"], 1,
                        np.random.default_rng(9))
        positions, scores = view.top_uncertain(measure, k)
        salt = int(np.random.default_rng(9).integers(2**63))  # the view draws one salt from its generator
        expected = whole_pool_top_k(uncertainty(probs, measure), k, salt)
        assert positions.tolist() == expected.tolist()
        np.testing.assert_array_equal(scores, uncertainty(probs, measure)[expected])
        assert view.scored == len(probs)


def test_the_top_of_each_part_merged_is_the_top_of_the_whole():
    """What an engine's workers return (each shard's top k, with its jitter) merges into the pool's top k."""
    rng = np.random.default_rng(5)
    scores = np.round(rng.random(2000), 2)  # many ties
    expected = whole_pool_top_k(scores, 50, salt=77)
    merged = TopUncertain(50, salt=77)
    for part in np.array_split(rng.permutation(2000), 13):  # shards in any order
        best = TopUncertain(50, salt=77)
        best.add(part, scores[part], part)
        merged.add_keyed(*best.best())
    assert merged.best()[0].tolist() == expected.tolist()


@pytest.fixture(scope="module")
def sliced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cheap_slice(tmp_path_factory.mktemp("stream") / "bbc", limit=300, seed=17)


@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch):
    """A pool view that refuses to score more than CHUNK positions at once (the pool here is about 200), and that
    no longer offers the whole pool's vectors."""
    monkeypatch.setattr(pool_view, "CHUNK", 16)
    whole = PoolView.score

    def score(self: PoolView, positions: np.ndarray) -> np.ndarray:
        if len(positions) > pool_view.CHUNK:
            raise KdError(f"asked to score {len(positions)} pool positions at once")
        return whole(self, positions)

    monkeypatch.setattr(PoolView, "score", score)
    assert not hasattr(PoolView, "pool_vectors")


SELECTORS = ["margin", "entropy", "least-confidence", "cluster-margin", "diversity", "mraru", "noise_aware", "random"]


@pytest.mark.parametrize("selector", SELECTORS)
def test_no_selector_asks_for_the_whole_pool_at_once(selector: str, sliced: Path, tmp_path: Path, refusing):
    with Project.open(fresh_copy(sliced, tmp_path)) as project:
        result = project.distill(DistillConfig(teacher="oracle", selector=selector, seed_selector="typiclust",
                                               seed_size=10, batch=10, budget_labels=40))
        assert result.status == "finished" and result.rounds[-1].n_labels == 40
        assert len(project.store.ids_in_split("pool")) > 10 * pool_view.CHUNK


def test_llkd_still_reads_every_pool_probability_at_once(sliced: Path, tmp_path: Path, refusing):
    # Its per-class thresholds and round-robin want the whole distribution; said here so that it is not forgotten.
    with Project.open(fresh_copy(sliced, tmp_path)) as project, pytest.raises(KdError, match="at once"):
        project.distill(DistillConfig(teacher="oracle", selector="llkd", seed_size=10, batch=10, budget_labels=40))


def test_a_run_streamed_in_small_chunks_selects_what_one_in_large_chunks_selects(sliced: Path, tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch):
    config = DistillConfig(teacher="oracle", teacher_options={"noise": 0.2}, selector="cluster-margin",
                           seed_size=10, batch=10, budget_labels=50, seed=4)
    chosen = []
    for chunk in (65536, 5):
        monkeypatch.setattr(pool_view, "CHUNK", chunk)
        with Project.open(fresh_copy(sliced, tmp_path / str(chunk))) as project:
            run = project.distill(config)
            chosen.append([[s["id"] for s in r.selected] for r in project.rounds(run.run_id)])
    assert chosen[0] == chosen[1] and sum(map(len, chosen[0])) == 50


@pytest.mark.parametrize("selector", ["margin", "mraru"])
def test_no_read_of_vectors_grows_with_the_pool(selector: str, sliced: Path, tmp_path: Path, refusing,
                                                monkeypatch: pytest.MonkeyPatch):
    """The driver reads the vectors of what it trains and evaluates on, and the pool a chunk at a time."""
    from kdstudio.store.vector_shards import VectorShards

    reads: list[int] = []
    whole = VectorShards.read

    def read(self: VectorShards, rows: np.ndarray) -> np.ndarray:
        reads.append(len(rows))
        return whole(self, rows)

    monkeypatch.setattr(VectorShards, "read", read)
    with Project.open(fresh_copy(sliced, tmp_path)) as project:
        result = project.distill(DistillConfig(teacher="oracle", selector=selector, seed_size=10, batch=10,
                                               budget_labels=40, val_limit=20, test_limit=30))
        assert result.status == "finished"
        pool = len(project.store.ids_in_split("pool"))
    assert pool > 200 and reads and max(reads) <= 40, sorted(reads)[-5:]
