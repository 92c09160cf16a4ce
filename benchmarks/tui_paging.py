"""The terminal UI on a corpus of 1,000,000 documents: how long the app takes to open, and each Corpus-tab action
(first page, a deep page, a text search, a label filter) through the same Project calls the app makes, side by
side with the teacher labels spread over 100,000 of them.

    .venv/bin/python benchmarks/tui_paging.py                 # 1,000,000 documents, ~2 minutes
    .venv/bin/python benchmarks/tui_paging.py --rows 100000

JSON goes to benchmarks/out/tui_paging.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import time
from pathlib import Path

import pyarrow.parquet as pq
from import_embed import LABELS, synthetic_table  # the sibling benchmark script

from kdstudio.config import Label
from kdstudio.project import Filters, Project
from kdstudio.store import ImportOptions
from kdstudio.tui.app import KdStudioApp

OUT = Path("benchmarks/out")


def timed(fn, repeats: int = 5) -> float:
    """Median seconds of `repeats` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def app_timings(project: Project) -> dict[str, float]:
    app = KdStudioApp(project)
    started = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        opened = time.perf_counter() - started
        started = time.perf_counter()
        await pilot.press("f3")
        await pilot.pause()
        first_page = time.perf_counter() - started
        started = time.perf_counter()
        await pilot.press("n")
        await pilot.pause()
        next_page = time.perf_counter() - started
    return {"open to dashboard": opened, "F3 to first corpus page": first_page, "n to next page": next_page}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    work = OUT / "tui_paging"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    table = synthetic_table(args.rows)
    pq.write_table(table, work / "corpus.parquet")
    with Project.init(work / "p", [Label(x) for x in LABELS]) as project:
        project.import_file(work / "corpus.parquet", ImportOptions(id_column="id", label_column="label"))
        # Teacher labels on a tenth of the corpus, as after a long run, so that the label join has work to do.
        project.store.con.execute(
            "INSERT INTO labels (doc_id, label, source, confidence) SELECT d.id, g.label, 'teacher', 0.5 + "
            "(hash(d.id) % 50) / 100.0 FROM documents d JOIN gold g ON g.doc_id = d.id USING SAMPLE 10 PERCENT "
            "(reservoir, 1)")
    with Project.open(work / "p") as project:
        results = {
            "first page": timed(lambda: project.documents(offset=0, size=50)),
            "page at the middle": timed(lambda: project.documents(offset=args.rows // 2, size=50)),
            "last page": timed(lambda: project.documents(offset=args.rows - 50, size=50)),
            "search 'doc 4242'": timed(lambda: project.documents(Filters(search="doc 4242"), size=50)),
            f"label = {LABELS[0]}": timed(lambda: project.documents(Filters(label=LABELS[0]), size=50)),
            "teacher labels, confidence <= 0.6": timed(
                lambda: project.documents(Filters(label_source="teacher", max_confidence=0.6), size=50)),
            "status (dashboard numbers)": timed(project.status),
        }
        results.update(asyncio.run(app_timings(project)))
    print(f"{args.rows:,} documents, median of 5 calls (the app's own actions: one run each)")
    for name, seconds in results.items():
        print(f"  {name:<36} {seconds * 1e3:8.1f} ms")
    (OUT / "tui_paging.json").write_text(json.dumps({"rows": args.rows, "seconds": results}, indent=2))


if __name__ == "__main__":
    main()
