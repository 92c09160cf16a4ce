"""Import and embedding throughput, measured side by side in one run.

    .venv/bin/python benchmarks/import_embed.py [--rows 1000000] [--embed-limit N]
    .venv/bin/python benchmarks/import_embed.py --static-million [--rows 1000000]
    .venv/bin/python benchmarks/import_embed.py --static-embed 1000000,10000000

1. Import N synthetic rows (id, text, gold label) from Parquet and from CSV into fresh projects: rows/s.
2. Embed bbc-news (long articles, most past the 256-token cap) and reuters-r8 (lengths vary widely) with
   all-MiniLM-L6-v2, batches in length-sorted order vs in random order: docs/s and the ratio per dataset.
--static-million instead: N synthetic news-like documents (20-200 words drawn from bbc-news' own words) imported,
embedded by the static tier (`kdstudio embed --encoder static`: vectors written to the vector shards), and predicted
by an exported static student with the torch-free runtime; the time of each step.
--static-embed N,...: for each N, N short synthetic documents (8-40 words, as in 1.) written to Parquet a chunk at a
time, then `kdstudio init`, `import` and `embed --encoder static` as a user runs them, each a child process whose
wall time and peak resident memory /usr/bin/time reports; the disk the vectors and the DuckDB file take per million.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from kdstudio.config import EmbeddingSettings, Label
from kdstudio.embeddings import embed_missing
from kdstudio.project import Project
from kdstudio.store import ImportOptions

LABELS = ["alpha", "beta", "gamma", "delta"]


def synthetic_table(rows: int, seed: int = 0, first: int = 0) -> pa.Table:
    """Rows `first` .. `first + rows` of 8-40 words each; `seed` and `first` together fix what they hold."""
    rng = np.random.default_rng([seed, first])
    vocabulary = np.array([f"w{i}" for i in range(5000)])
    lengths = rng.integers(8, 40, size=rows)
    words = vocabulary[rng.integers(0, len(vocabulary), size=int(lengths.sum()))]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    # The row number keeps every text distinct, so dedupe drops nothing and all rows are written.
    texts = [f"doc {first + i} " + " ".join(words[bounds[i]:bounds[i + 1]]) for i in range(rows)]
    return pa.table({
        "id": [f"s{first + i}" for i in range(rows)],
        "text": texts,
        "label": np.array(LABELS)[rng.integers(0, len(LABELS), size=rows)],
    })


def _timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident GB) of a kdstudio command in a child process."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return seconds, peak_kb * 1024 / 1e9


def _folder_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9


def bench_static_embed(workdir: Path, rows: int, chunk: int = 500_000) -> dict[str, float]:
    """`kdstudio import` and `embed --encoder static` of `rows` short documents, as a user runs them."""
    corpus = workdir / f"short-{rows}.parquet"
    with pq.ParquetWriter(corpus, synthetic_table(1).schema) as writer:
        for first in range(0, rows, chunk):
            writer.write_table(synthetic_table(min(chunk, rows - first), first=first))
    project = workdir / f"static-{rows}"
    kd = str(Path(".venv/bin/kdstudio"))
    subprocess.run([kd, "init", str(project), "--labels", ",".join(LABELS)], check=True, capture_output=True)
    import_s, import_gb = _timed([kd, "import", str(corpus), "-p", str(project), "--id-column", "id",
                                  "--label-column", "label"])
    embed_s, embed_gb = _timed([kd, "embed", "-p", str(project), "--encoder", "static"])
    vectors_gb, duckdb_gb = _folder_gb(project / "vectors"), (project / "kdstudio.duckdb").stat().st_size / 1e9
    return {"rows": rows, "import_s": import_s, "import_peak_gb": import_gb, "embed_s": embed_s,
            "embed_peak_gb": embed_gb, "vectors_gb": vectors_gb, "duckdb_gb": duckdb_gb,
            "corpus_gb": corpus.stat().st_size / 1e9}


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


def write_news_like(path: Path, rows: int, seed: int = 0, chunk: int = 100_000) -> float:
    """Parquet of texts of 20-200 words drawn from bbc-news' vocabulary (by frequency), each made distinct by its
    number, written a chunk at a time; returns the mean length in characters."""
    from kdstudio.plugins import get_plugins

    corpus = get_plugins().get("dataset", "bbc-news").cls().load().table.column("text").to_pylist()
    words, counts = np.unique(" ".join(corpus).split(), return_counts=True)
    vocabulary, weights = words.tolist(), counts / counts.sum()
    rng = np.random.default_rng(seed)
    chars = 0
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.string())])) \
            as writer:
        for first in range(0, rows, chunk):
            n = min(chunk, rows - first)
            bounds = np.concatenate([[0], np.cumsum(rng.integers(20, 201, size=n))])
            drawn = rng.choice(len(vocabulary), size=int(bounds[-1]), p=weights).tolist()
            texts = [f"{first + i} " + " ".join(vocabulary[j] for j in drawn[bounds[i]:bounds[i + 1]])
                     for i in range(n)]
            chars += sum(map(len, texts))
            writer.write_table(pa.table({"id": [f"s{first + i}" for i in range(n)], "text": texts,
                                         "label": np.array(LABELS)[rng.integers(0, len(LABELS), size=n)]}))
    return chars / rows


def bench_static_million(workdir: Path, rows: int) -> dict[str, float]:
    from kdstudio.interfaces import ExportContext
    from kdstudio.runtime import Classifier

    started = time.perf_counter()
    mean_chars = write_news_like(workdir / "news.parquet", rows)
    result = {"rows": rows, "mean_chars": mean_chars, "generate_s": time.perf_counter() - started}
    with Project.init(workdir / "static-million", [Label(x) for x in LABELS]) as project:
        started = time.perf_counter()
        project.import_file(workdir / "news.parquet", ImportOptions(id_column="id", label_column="label"))
        result["import_s"] = time.perf_counter() - started
        project.encoder_for(EmbeddingSettings(encoder="static")).load()  # built once per machine: not timed here
        started = time.perf_counter()
        report = project.embed(encoder="static")
        result["embed_s"] = time.perf_counter() - started
        assert report.embedded == rows, report
        ids = project.store.ids_in_split("pool")[:200]
        student = project.plugins.get("student", "logreg").cls()
        student.fit(project.store.vectors(project.vector_key, ids),
                    np.arange(len(ids)) % len(LABELS), len(LABELS))
        exporter = project.plugins.get("exporter", "onnx").cls()
        exporter.export(student, workdir / "static-model", ExportContext(project.labels, project.embedder))
        texts = project.store.texts(project.store.ids_in_split("pool"))
    started = time.perf_counter()
    Classifier(workdir / "static-model").predict_proba(texts)
    result["predict_s"] = time.perf_counter() - started
    return result


def static_embed(sizes: str) -> None:
    results = []
    for rows in (int(n) for n in sizes.split(",")):
        with tempfile.TemporaryDirectory(dir="benchmarks/out") as tmp:
            r = bench_static_embed(Path(tmp), rows)
        results.append(r)
        per_million = 1e6 / rows
        print(f"{rows:,} short documents: import {r['import_s']:.0f} s ({rows / r['import_s']:,.0f} rows/s, peak "
              f"{r['import_peak_gb']:.2f} GB); embed --encoder static {r['embed_s']:.0f} s "
              f"({rows / r['embed_s']:,.0f} docs/s, peak {r['embed_peak_gb']:.2f} GB); together "
              f"{r['import_s'] + r['embed_s']:.0f} s; disk per million documents: vectors "
              f"{r['vectors_gb'] * per_million:.2f} GB, DuckDB {r['duckdb_gb'] * per_million:.2f} GB "
              f"(the Parquet corpus {r['corpus_gb'] * per_million:.2f} GB)", flush=True)
    Path("benchmarks/out/static_embed.json").write_text(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--datasets", default="bbc-news,reuters-r8")
    parser.add_argument("--embed-limit", type=int, default=2225,
                        help="documents per dataset (default 2225: all of bbc-news, a same-sized slice of reuters-r8)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/import_embed.json"))
    parser.add_argument("--static-million", action="store_true", help="the static tier on N news-like documents")
    parser.add_argument("--static-embed", default="", help="comma-separated corpus sizes: import and static embed")
    args = parser.parse_args()
    if args.static_embed:
        static_embed(args.static_embed)
        return
    if args.static_million:
        with tempfile.TemporaryDirectory() as tmp:
            r = bench_static_million(Path(tmp), args.rows)
        print(f"{r['rows']:,} news-like documents ({r['mean_chars']:.0f} characters on average): imported in "
              f"{r['import_s']:.0f}s; embedded by the static tier in {r['embed_s']:.0f}s "
              f"({r['rows'] / r['embed_s']:,.0f} docs/s, vectors written to DuckDB); predicted by the exported static "
              f"student in {r['predict_s']:.0f}s ({r['rows'] / r['predict_s']:,.0f} docs/s)")
        Path("benchmarks/out/static_million.json").write_text(json.dumps(r, indent=1))
        return

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
