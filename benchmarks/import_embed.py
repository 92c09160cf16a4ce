"""Import and embedding throughput, measured side by side in one run.

    .venv/bin/python benchmarks/import_embed.py [--rows 1000000] [--embed-limit N]

1. Import N synthetic rows (id, text, gold label) from Parquet and from CSV into fresh projects: rows/s.
2. Embed bbc-news (long articles, most past the 256-token cap) and reuters-r8 (lengths vary widely) with
   all-MiniLM-L6-v2, batches in length-sorted order vs in random order: docs/s and the ratio per dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from kdstudio.config import Label
from kdstudio.embeddings import embed_missing
from kdstudio.project import Project
from kdstudio.store import ImportOptions

LABELS = ["alpha", "beta", "gamma", "delta"]


def synthetic_table(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(5000)])
    lengths = rng.integers(8, 40, size=rows)
    words = vocabulary[rng.integers(0, len(vocabulary), size=int(lengths.sum()))]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    # The row number keeps every text distinct, so dedupe drops nothing and all rows are written.
    texts = [f"doc {i} " + " ".join(words[bounds[i]:bounds[i + 1]]) for i in range(rows)]
    return pa.table({
        "id": [f"s{i}" for i in range(rows)],
        "text": texts,
        "label": np.array(LABELS)[rng.integers(0, len(LABELS), size=rows)],
    })


def bench_import(workdir: Path, table: pa.Table) -> dict[str, dict[str, float]]:
    files = {"parquet": workdir / "synthetic.parquet", "csv": workdir / "synthetic.csv"}
    pq.write_table(table, files["parquet"])
    pacsv.write_csv(table, files["csv"])
    results = {}
    for fmt, path in files.items():
        with Project.init(workdir / f"import-{fmt}", [Label(x) for x in LABELS]) as project:
            started = time.perf_counter()
            report = project.import_file(path, ImportOptions(id_column="id", label_column="label",
                                                             split={"val": 0.1, "test": 0.1}))
            seconds = time.perf_counter() - started
        assert report.imported == table.num_rows, report
        results[fmt] = {"rows": report.imported, "seconds": seconds, "rows_per_s": report.imported / seconds,
                        "file_mb": path.stat().st_size / 1e6}
    return results


def bench_embed(workdir: Path, dataset: str, limit: int | None) -> dict[str, dict[str, float]]:
    results = {}
    for order, sort in (("length-sorted", True), ("random order", False)):
        project, _ = Project.from_dataset(dataset, workdir / f"embed-{dataset}-{sort}", limit=limit)
        with project:
            project.embedder.load()
            report = embed_missing(project.store, project.embedder, sort_by_length=sort)
        results[order] = {"docs": report.embedded, "seconds": report.seconds,
                          "docs_per_s": report.embedded / report.seconds}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--datasets", default="bbc-news,reuters-r8")
    parser.add_argument("--embed-limit", type=int, default=2225,
                        help="documents per dataset (default 2225: all of bbc-news, a same-sized slice of reuters-r8)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/import_embed.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        table = synthetic_table(args.rows)
        print(f"generated {args.rows:,} synthetic rows in {time.perf_counter() - started:.1f}s")
        imports = bench_import(workdir, table)
        del table
        for fmt, r in imports.items():
            print(f"import {fmt:8s} {r['rows']:>10,} rows  {r['file_mb']:7.1f} MB  {r['seconds']:6.1f}s  "
                  f"{r['rows_per_s']:>10,.0f} rows/s")
        print(f"parquet / csv import speed: {imports['parquet']['rows_per_s'] / imports['csv']['rows_per_s']:.2f}x")
        embeds = {}
        for dataset in args.datasets.split(","):
            embeds[dataset] = runs = bench_embed(workdir, dataset, args.embed_limit)
            for order, r in runs.items():
                print(f"embed  {dataset:12s} {order:14s} {r['docs']:>6} docs  {r['seconds']:6.1f}s  "
                      f"{r['docs_per_s']:6.1f} docs/s")
            runs["sorted_over_random"] = runs["length-sorted"]["docs_per_s"] / runs["random order"]["docs_per_s"]
            print(f"{dataset}: length-sorted / random order embedding speed: {runs['sorted_over_random']:.2f}x")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
    args.out.write_text(json.dumps({"machine": machine,
                                    "import": imports, "embed": embeds}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
