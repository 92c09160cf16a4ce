"""Scale-out throughput: rows/s for embedding and for prediction with an exported model, on the local engine (this
process, all cores) and on the Ray engine with 1 and 2 workers (one CPU each), side by side in one run.

    .venv/bin/python benchmarks/scale.py                     # all of bbc-news (2,225 articles), ~15 minutes
    .venv/bin/python benchmarks/scale.py --limit 400         # a quick look

Ray runs as a local instance started by the engine (loopback only), as `--engine ray` without `--address` does.
Each Ray figure includes what a user waits for: shard export, actor start-up (model load) and loading results back;
the job time alone (from the first shard done) is printed beside it. Then the hand-off between DuckDB and Parquet
shards on a synthetic corpus of 1,000,000 documents: shards out, the workers' vectors into the vector shards, and
every vector read back. JSON goes to benchmarks/out/scale.json.

    .venv/bin/python benchmarks/scale.py --skip-engines      # the hand-off alone, ~2 minutes

The loop's memory at pool sizes beyond this machine's memory (issue 29): a synthetic project per size whose 384-d
float32 vectors are written straight to the vector shards (four classes, each a direction plus noise), then
`kdstudio distill` with the simulated teacher for 10 rounds of 20 labels per selector, in a child process whose peak
resident memory /usr/bin/time reports. The project stays in benchmarks/out/pool-N for a second look.

    .venv/bin/python benchmarks/scale.py --skip-engines --handoff-rows 0 --pool-sizes 1000000,10000000

The same runs with `--engine ray` on a local 2-node Ray cluster (the tests' cluster: one CPU a node, loopback only):
the peak is the driver's, since the workers are the cluster's processes.

    .venv/bin/python benchmarks/scale.py --skip-engines --handoff-rows 0 --ray-pool-sizes 1000000,10000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

OUT = Path("benchmarks/out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="bbc-news")
    parser.add_argument("--limit", type=int, help="a stratified slice instead of the whole dataset")
    parser.add_argument("--shard-rows", type=int, default=64)
    parser.add_argument("--handoff-rows", type=int, default=1_000_000, help="synthetic documents; 0 skips")
    parser.add_argument("--skip-engines", action="store_true", help="measure the hand-off only")
    parser.add_argument("--pool-sizes", default="", help="comma-separated pool sizes for the loop's memory")
    parser.add_argument("--selectors", default="mraru,margin")
    parser.add_argument("--ray-pool-sizes", default="", help="the same, with the Ray driver on a 2-node cluster")
    parser.add_argument("--ray-shard-rows", type=int, default=65536)
    args = parser.parse_args()
    report: dict = {}
    if not args.skip_engines:
        report.update(engines(args))
    if args.handoff_rows:
        report["handoff"] = handoff(args.handoff_rows)
    if args.pool_sizes:
        from pool_memory import loop_memory  # the sibling module

        report["loop_memory"] = [loop_memory(int(n), args.selectors.split(",")) for n in args.pool_sizes.split(",")]
    if args.ray_pool_sizes:
        from pool_memory import ray_driver_memory

        report["ray_driver_memory"] = ray_driver_memory([int(n) for n in args.ray_pool_sizes.split(",")],
                                                        args.selectors.split(","), args.ray_shard_rows)
    (OUT / "scale.json").write_text(json.dumps(report, indent=2))


def handoff(rows: int) -> dict[str, float]:
    """DuckDB -> Parquet shards -> vector shards at a million documents, and reading every vector back."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from import_embed import LABELS, synthetic_table  # the sibling benchmark script

    from kdstudio.config import Label
    from kdstudio.engine import vectors_column
    from kdstudio.project import Project
    from kdstudio.store import ImportOptions
    from kdstudio.store.shards import export_missing_texts, load_embeddings

    work = OUT / "scale-handoff"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pq.write_table(synthetic_table(rows), work / "corpus.parquet")
    results: dict[str, float] = {}
    with Project.init(work / "p", [Label(x) for x in LABELS]) as project:
        project.import_file(work / "corpus.parquet", ImportOptions(id_column="id", label_column="label"))
        started = time.perf_counter()
        shards = export_missing_texts(project.store, "m", work / "in", 8192)
        results["export_rows_per_s"] = rows / (time.perf_counter() - started)
        rng = np.random.default_rng(0)
        (work / "out").mkdir()
        for path, _ in shards:  # what the workers would write: 384-d float32 vectors, keyed by id
            ids = pq.read_table(path, columns=["id"]).column("id")
            vectors = rng.standard_normal((len(ids), 384)).astype(np.float32)
            pq.write_table(pa.table({"id": ids, "vector": vectors_column(vectors)}), work / "out" / path.name)
        started = time.perf_counter()
        load_embeddings(project.store, "m", sorted((work / "out").glob("*.parquet")))
        results["load_rows_per_s"] = rows / (time.perf_counter() - started)
        started = time.perf_counter()
        _, matrix = project.store.embedding_matrix("m")
        results["matrix_s"] = time.perf_counter() - started
        results["matrix_gb"] = matrix.nbytes / 1e9
    results["duckdb_gb"] = (work / "p" / "kdstudio.duckdb").stat().st_size / 1e9
    print(f"hand-off at {rows:,} documents: DuckDB -> shards {results['export_rows_per_s']:,.0f} rows/s, "
          f"vectors into the vector shards {results['load_rows_per_s']:,.0f} rows/s, every vector read back "
          f"({results['matrix_gb']:.2f} GB) in {results['matrix_s']:.1f} s, DuckDB file "
          f"{results['duckdb_gb']:.2f} GB", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return results


def engines(args: argparse.Namespace) -> dict:

    import numpy as np

    from kdstudio.loop import DistillConfig
    from kdstudio.plugins import get_plugins
    from kdstudio.project import Project
    from kdstudio.runtime import Classifier
    from kdstudio.scale import predict_with

    work = OUT / "scale"
    shutil.rmtree(work, ignore_errors=True)
    fresh, _ = Project.from_dataset(args.dataset, work / "imported", limit=args.limit)
    fresh.close()
    n_docs = Project.open(work / "imported").store.con.execute("SELECT count(*) FROM documents").fetchone()[0]
    print(f"{args.dataset}: {n_docs} documents, {os.cpu_count()} CPU cores", flush=True)
    results: dict[str, dict[str, float]] = {"embed": {}, "predict": {}}
    first_shard: dict[str, float] = {}

    def ray_engine(workers: int):
        return get_plugins().get("engine", "ray").cls(workers=workers, shard_rows=args.shard_rows)

    # -- embedding ---------------------------------------------------------------------------------------------
    reference = None
    for name, workers in (("local", 0), ("ray-1", 1), ("ray-2", 2)):
        directory = work / f"embed-{name}"
        shutil.copytree(work / "imported", directory)
        with Project.open(directory) as project:
            engine = ray_engine(workers) if workers else None
            if engine is not None:
                engine.describe()  # connects (starts Ray) before the clock
            stamps: list[tuple[float, int]] = []
            started = time.perf_counter()
            project.embed(lambda done, total, log=stamps: log.append((time.perf_counter(), done)), engine=engine)
            seconds = time.perf_counter() - started
            ids, matrix = project.store.embedding_matrix(project.config.embedding.model)
            if engine is not None:
                engine.close()
        if reference is None:
            reference = (ids, matrix)
        else:
            assert ids == reference[0] and np.allclose(matrix, reference[1], atol=1e-5), f"{name} differs from local"
        results["embed"][name] = n_docs / seconds
        done = [(t, n) for t, n in stamps if n]
        if len(done) > 1:
            first_shard[f"embed-{name}"] = (done[-1][1] - done[0][1]) / (done[-1][0] - done[0][0])
        print(f"embed    {name:6s} {n_docs / seconds:7.1f} rows/s  ({seconds:.1f} s)", flush=True)

    # -- prediction with the exported model ----------------------------------------------------------------------
    with Project.open(work / "embed-local") as project:
        project.distill(DistillConfig(budget_labels=100, val_limit=100))
        project.export(work / "model", quantize="int8")
        texts = project.store.texts(project.store.ids_in_split("pool"))
    classifier = Classifier(work / "model")
    started = time.perf_counter()
    local_probs = classifier.predict_proba(texts)
    seconds = time.perf_counter() - started
    results["predict"]["local"] = len(texts) / seconds
    print(f"predict  local  {len(texts) / seconds:7.1f} rows/s  ({seconds:.1f} s)", flush=True)
    for name, workers in (("ray-1", 1), ("ray-2", 2)):
        engine = ray_engine(workers)
        engine.describe()
        started = time.perf_counter()
        probs = predict_with(engine, work / "model", texts, work / f"predict-{name}", len(classifier.labels))
        seconds = time.perf_counter() - started
        engine.close()
        # int8 quantizes activations per batch (dynamic ranges), so a text's neighbours in its batch nudge its
        # probabilities: equal labels are the check here, exact parity is tested with fp32.
        same = float((probs.argmax(1) == local_probs.argmax(1)).mean())
        assert same >= 0.98, f"{name}: only {same:.1%} of labels agree with local"
        results["predict"][name] = len(texts) / seconds
        print(f"predict  {name:6s} {len(texts) / seconds:7.1f} rows/s  ({seconds:.1f} s); same label as local "
              f"{same:.1%}, max |dp| {np.abs(probs - local_probs).max():.4f}", flush=True)

    print()
    print("job                 local    ray-1    ray-2   ray-2/local  ray-2/ray-1")
    for job, rates in results.items():
        print(f"{job:16s} {rates['local']:8.1f} {rates['ray-1']:8.1f} {rates['ray-2']:8.1f} "
              f"{rates['ray-2'] / rates['local']:11.2f}x {rates['ray-2'] / rates['ray-1']:11.2f}x")
    if first_shard:
        print("embedding, steady state (after the first shard, i.e. without start-up): "
              + ", ".join(f"{k.removeprefix('embed-')} {v:.1f} rows/s" for k, v in first_shard.items()))
    return {"dataset": args.dataset, "documents": n_docs, "results": results, "steady_embed": first_shard}


if __name__ == "__main__":
    main()
