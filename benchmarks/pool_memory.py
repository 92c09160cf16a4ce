"""The loop's peak memory and round time on synthetic pools of any size (issue 29); run through
`benchmarks/scale.py --pool-sizes N,...`. Vectors are written straight to the vector shards (384-d float32: four
classes, each a random direction plus noise), so that no encoder's time hides the loop's."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

OUT = Path("benchmarks/out")
LABELS = ["alpha", "beta", "gamma", "delta"]
DIM = 384
BATCH = 65536
ROUNDS = 10


def _documents(store, n: int) -> None:
    """n documents, 1% validation and 1% test, made inside DuckDB."""
    store.con.execute(
        "INSERT INTO documents (id, text, text_hash, split, source) SELECT printf('d%010d', i), "
        "'synthetic document ' || i, md5(i::VARCHAR), CASE i % 100 WHEN 0 THEN 'val' WHEN 1 THEN 'test' "
        "ELSE 'pool' END, 'imported' FROM range(?) t(i)", [n])


def _gold_and_vectors(store, model: str, n: int) -> None:
    rng = np.random.default_rng(0)
    directions = rng.standard_normal((len(LABELS), DIM)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    labels = rng.integers(0, len(LABELS), size=n, dtype=np.int8)
    for start in range(0, n, BATCH):
        ids = [f"d{i:010d}" for i in range(start, min(start + BATCH, n))]
        chosen = labels[start:start + len(ids)]
        store.con.register("_gold", pa.table({"doc_id": ids, "label": np.array(LABELS)[chosen]}))
        store.con.execute("INSERT INTO gold SELECT doc_id, label FROM _gold")
        store.con.unregister("_gold")
        vectors = 0.12 * directions[chosen] + rng.standard_normal((len(ids), DIM)).astype(np.float32) / np.sqrt(DIM)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.save_embeddings(model, ids, vectors)


def build(n: int) -> tuple[Path, dict]:
    from kdstudio.config import Label
    from kdstudio.project import Project

    directory = OUT / f"pool-{n}"
    said = directory / "built.json"
    if said.is_file():
        return directory, json.loads(said.read_text())
    shutil.rmtree(directory, ignore_errors=True)
    started = time.perf_counter()
    with Project.init(directory / "p", [Label(x) for x in LABELS]) as project:
        _documents(project.store, n)
        documents_s = time.perf_counter() - started
        _gold_and_vectors(project.store, project.vector_key, n)
        shards = project.store.vector_shards(project.vector_key)
        facts = {"documents_s": documents_s, "vectors_s": time.perf_counter() - started - documents_s,
                 "shards_gb": shards.disk_bytes() / 1e9}
    facts["duckdb_gb"] = (directory / "p" / "kdstudio.duckdb").stat().st_size / 1e9
    said.write_text(json.dumps(facts))
    return directory, facts


def distill(directory: Path, selector: str, engine: list[str] | None = None) -> dict:
    """One run in a child process: its peak resident memory, wall time and each round's selection time. With an
    engine (`--engine ray --address ...`), the child is the driver: the workers are the cluster's processes."""
    from kdstudio.project import Project

    command = ["/usr/bin/time", "-v", ".venv/bin/kdstudio", "distill", "-p", str(directory / "p"), "--teacher",
               "oracle", "--selector", selector, "--seed-size", "20", "--batch", "20", "--budget-labels",
               str(20 * ROUNDS), "--val-limit", "200", "--test-limit", "2000", "--seed", "1", *(engine or [])]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{selector} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    with Project.open(directory / "p", read_only=True) as project:
        run = project.runs()[-1]
        rounds = project.rounds(run.id)
    later = [r for r in rounds if r.round > 0]
    select_s = [r.timings.get("select_s", 0.0) for r in later]
    round_s = [sum(r.timings.values()) for r in later]
    return {"selector": selector, "peak_gb": peak_kb * 1024 / 1e9, "wall_s": wall, "rounds": len(rounds),
            "select_s_median": statistics.median(select_s) if select_s else 0.0,
            "round_s_median": statistics.median(round_s) if round_s else 0.0,
            "scored_per_round": statistics.median([r.scored or 0 for r in rounds if r.round > 0] or [0]),
            "last_line": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""}


def loop_memory(n: int, selectors: list[str], engine: list[str] | None = None) -> dict:
    directory, facts = build(n)
    print(f"pool of {n:,} documents: documents {facts['documents_s']:.0f} s, vectors written "
          f"{facts['vectors_s']:.0f} s ({n / facts['vectors_s']:,.0f} rows/s), shards {facts['shards_gb']:.2f} GB, "
          f"DuckDB {facts['duckdb_gb']:.2f} GB", flush=True)
    runs = []
    for selector in selectors:
        result = distill(directory, selector, engine)
        runs.append(result)
        rate = result["scored_per_round"] / result["select_s_median"] if result["select_s_median"] else 0
        where = " (Ray driver)" if engine else ""
        print(f"  {selector:7s}{where} peak {result['peak_gb']:.2f} GB, wall {result['wall_s']:.0f} s, a round "
              f"{result['round_s_median']:.2f} s of which selection {result['select_s_median']:.2f} s (medians), "
              f"scoring {result['scored_per_round']:,.0f} documents a round ({rate:,.0f}/s)", flush=True)
    return {"documents": n, **facts, "runs": runs}


def ray_driver_memory(sizes: list[int], selectors: list[str], shard_rows: int) -> list[dict]:
    """The same runs with `--engine ray` on a local 2-node cluster (one CPU each, loopback only; the tests' cluster):
    the peak is the driver's, the process that holds the run."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from ray_cluster import ray_cluster

    with ray_cluster(nodes=2, cpus_per_node=1) as cluster:
        engine = ["--engine", "ray", "--address", cluster.address, "--workers", "2",
                  "--engine-option", f"shard_rows={shard_rows}"]
        return [loop_memory(n, selectors, engine) for n in sizes]
