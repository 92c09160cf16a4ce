"""The Ray engine on a real two-node Ray cluster that listens on loopback only: embeddings, pool scores, selections
and predictions equal the in-process engine's; a worker killed mid-job loses and duplicates no rows. The real models
run on the cluster's workers (MiniLM from the command line, the static encoder, the exported ONNX model); the tests
of the job's mechanics (shards, order, a killed worker) embed with the test encoder, which the workers load through
the same plugin machinery."""

from __future__ import annotations

import csv
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_ENCODER, fresh_copy, run_cli, unembedded_slice
from ray_cluster import cmdline, descendants, listening, ray_cluster

from kdstudio.loop import DistillConfig
from kdstudio.plugins import get_plugins
from kdstudio.project import Project
from kdstudio.runtime import Classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster(nodes=2, cpus_per_node=1) as running:
        yield running


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """120 bbc-news documents, imported only (the test encoder is theirs), and the vectors the in-process engine gives
    them."""
    return unembedded_slice(tmp_path_factory.mktemp("ray"), limit=120, seed=3, encoder=TEST_ENCODER)


def ray_engine(cluster, **options):
    return get_plugins().get("engine", "ray").cls(address=cluster.address, workers=2, **options)


def test_embeddings_from_the_cluster_equal_the_local_engines(cluster, corpus: dict, tmp_path: Path):
    engine = ray_engine(cluster, shard_rows=16)
    with Project.open(fresh_copy(corpus["project"], tmp_path)) as project:
        progress: list[tuple[int, int]] = []
        report = project.embed(lambda done, total: progress.append((done, total)), engine=engine)
        assert (report.embedded, report.already) == (120, 0)
        ids, matrix = project.store.embedding_matrix(corpus["key"])
        assert project.store.ids_missing_embedding(corpus["key"]) == []
        assert not (project.directory / "work").exists()  # shards are cleaned up
        assert project.embed(engine=engine).embedded == 0  # nothing left to do, nothing sent
    engine.close()
    assert ids == corpus["ids"]
    np.testing.assert_allclose(matrix, corpus["vectors"], atol=1e-5)
    assert progress[0] == (0, 120) and progress[-1] == (120, 120) and len(progress) == 1 + 8  # one step per shard


def test_static_embeddings_from_the_cluster_equal_the_local_encoders(cluster, corpus: dict, tmp_path: Path,
                                                                     static_build: dict):
    """The static encoder is built once by the driver (the cluster shares this machine's cache) and run by workers."""
    with Project.open(fresh_copy(corpus["project"], tmp_path / "local")) as local:
        local.embed(encoder="static")
        key = local.vector_key
        ids, expected = local.store.embedding_matrix(key)
    engine = ray_engine(cluster, shard_rows=32)
    with Project.open(fresh_copy(corpus["project"], tmp_path / "ray")) as project:
        assert project.embed(encoder="static", engine=engine).embedded == 120
        got_ids, got = project.store.embedding_matrix(key)
    engine.close()
    assert got_ids == ids
    np.testing.assert_allclose(got, expected, atol=1e-5)


def _kill_a_worker_when_work_is_done(out_dir: Path, killed: list[int], alive_then: set[int], seen: set[int],
                                     done: threading.Event) -> None:
    """Once the first output shard exists, SIGKILL one of the job's actor processes; keep noting every actor
    process seen until the job ends."""
    while not done.is_set():
        workers = {pid for pid in descendants() if "MapWorker" in cmdline(pid)}
        seen.update(workers)
        if not killed and workers and out_dir.is_dir() and any(out_dir.glob("*.parquet")):
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            alive_then.update(workers)
        time.sleep(0.05)


def test_a_worker_killed_mid_job_loses_and_duplicates_no_rows(cluster, corpus: dict, tmp_path: Path):
    engine = ray_engine(cluster, shard_rows=8)
    directory = fresh_copy(corpus["project"], tmp_path)
    killed: list[int] = []
    alive_then: set[int] = set()
    seen: set[int] = set()
    done = threading.Event()
    watcher = threading.Thread(target=_kill_a_worker_when_work_is_done,
                               args=(directory / "work" / "embed" / "out", killed, alive_then, seen, done),
                               daemon=True)
    watcher.start()
    try:
        with Project.open(directory) as project:
            report = project.embed(engine=engine)
            ids, matrix = project.store.embedding_matrix(corpus["key"])
            count = project.store.con.execute("SELECT count(*), count(DISTINCT doc_id) FROM vector_rows").fetchone()
    finally:
        done.set()
        watcher.join()
        engine.close()
    assert killed, "the job ended before a worker could be killed"
    assert not Path(f"/proc/{killed[0]}").exists()
    assert seen - alive_then, "Ray never started a replacement for the killed worker"
    assert report.embedded == 120 and count == (120, 120)
    assert ids == corpus["ids"]
    np.testing.assert_allclose(matrix, corpus["vectors"], atol=1e-5)


def _rounds(directory: Path, config: DistillConfig, engine=None) -> list[tuple[list[str], int, float]]:
    with Project.open(directory) as project:
        result = project.distill(config, engine=engine)
        rounds = [([s["id"] for s in r.selected], r.scored, r.metrics["test"]["accuracy"])
                  for r in project.rounds(result.run_id)]
    assert not (directory / "work").exists()  # the pool's shards and the round's students are cleaned up
    return rounds


@pytest.mark.parametrize("selector", ["margin", "mraru"])
def test_the_loop_scores_the_pool_on_the_cluster_and_selects_what_the_local_engine_does(
        cluster, exported: dict, tmp_path: Path, selector: str):
    config = DistillConfig(teacher="oracle", selector=selector, seed_size=20, batch=20, budget_labels=80)
    local = _rounds(fresh_copy(exported["project"], tmp_path / "local"), config)
    engine = ray_engine(cluster, shard_rows=64)
    on_ray = _rounds(fresh_copy(exported["project"], tmp_path / "ray"), config, engine)
    engine.close()
    assert [r[0] for r in on_ray] == [r[0] for r in local]  # the same documents, round after round
    assert [r[2] for r in on_ray] == pytest.approx([r[2] for r in local])
    with Project.open(exported["project"]) as project:
        n_pool = len(project.store.ids_in_split("pool", source="imported"))
    if selector == "margin":
        assert all(scored == n_pool - 20 * r for r, (_, scored, _) in enumerate(on_ray) if r)
    else:
        # M-RARU scores candidate chunks on the cluster until its batch is full, never the whole pool.
        # M-RARU scores candidate chunks on the cluster until its batch is full, never the whole pool; at most one
        # chunk per worker is scored ahead of the decisions beyond what the local engine scored.
        for (_, here, _), (_, there, _) in zip(local[1:], on_ray[1:], strict=True):
            assert here <= there <= here + 2 * 32 and there < n_pool


def _write_inputs(path: Path, texts: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows((f"doc-{i}", text) for i, text in enumerate(texts))


def test_predict_on_the_cluster_equals_local_and_keeps_row_order(cluster, exported: dict, tmp_path: Path):
    with Project.open(exported["project"]) as project:
        texts = project.store.texts(project.store.ids_in_split("test") + project.store.ids_in_split("val"))[:80]
    assert len(texts) == 80
    _write_inputs(tmp_path / "in.csv", texts)
    local = run_cli("predict", str(exported["fp32"]), str(tmp_path / "in.csv"), "--out", str(tmp_path / "local.csv"))
    assert local.returncode == 0, local.stderr
    # A second driver, as a user would run it: the command line connects to the running cluster.
    remote = run_cli("predict", str(exported["fp32"]), str(tmp_path / "in.csv"), "--out", str(tmp_path / "ray.csv"),
                     "--engine", "ray", "--address", cluster.address, "--workers", "2",
                     "--engine-option", "shard_rows=16")
    assert remote.returncode == 0, remote.stderr
    assert "engine: ray at 127.0.0.1:" in remote.stderr and "2 workers" in remote.stderr
    rows = {name: list(csv.DictReader((tmp_path / f"{name}.csv").open(encoding="utf-8"))) for name in ("local", "ray")}
    assert [r["id"] for r in rows["ray"]] == [f"doc-{i}" for i in range(80)]
    assert [r["label"] for r in rows["ray"]] == [r["label"] for r in rows["local"]]
    labels = Classifier(exported["fp32"]).labels
    for a, b in zip(rows["local"], rows["ray"], strict=True):
        assert [float(a[f"p_{x}"]) for x in labels] == pytest.approx([float(b[f"p_{x}"]) for x in labels], abs=1e-5)
    assert not list(tmp_path.glob("kdstudio-predict-*"))


def test_embed_on_the_cluster_from_the_command_line(cluster, corpus: dict, tmp_path: Path):
    directory = fresh_copy(corpus["project"], tmp_path)
    result = run_cli("embed", "-p", str(directory), "--encoder", "minilm", "--engine", "ray", "--address",
                     cluster.address, "--engine-option", "shard_rows=32")  # the real MiniLM, on the workers
    assert result.returncode == 0, result.stderr
    assert "embedded 120 documents with all-MiniLM-L6-v2" in result.stdout
    with Project.open(directory) as project:
        assert project.vector_key == "all-MiniLM-L6-v2"
        assert project.store.ids_missing_embedding("all-MiniLM-L6-v2") == []


def test_every_socket_of_the_cluster_listens_on_loopback_only(cluster):
    # Run last in this module: by now the cluster has started workers, actors and a second driver.
    sockets = listening(descendants())
    assert sockets, "found none of the cluster's sockets: the check would prove nothing"
    assert all(address.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")) for address, _ in sockets), \
        sockets


def test_engine_flags_without_an_engine_or_with_an_unknown_one_are_refused(corpus: dict):
    no_engine = run_cli("embed", "-p", str(corpus["project"]), "--address", "127.0.0.1:6379")
    assert no_engine.returncode == 1
    assert "need --engine" in no_engine.stderr
    unknown = run_cli("embed", "-p", str(corpus["project"]), "--engine", "spark")
    assert unknown.returncode == 1
    assert "no engine named 'spark' (registered: ray)" in unknown.stderr
    # Nothing listens there: one line at once, not Ray's minutes of retries.
    unreachable = run_cli("embed", "-p", str(corpus["project"]), "--engine", "ray", "--address", "127.0.0.1:9",
                          timeout=60)
    assert unreachable.returncode == 1
    assert "no Ray cluster answers at 127.0.0.1:9" in unreachable.stderr
