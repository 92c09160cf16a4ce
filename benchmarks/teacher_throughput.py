"""Teacher throughput: 1,000 labels from the LLM teacher through litellm over real HTTP, against the local
OpenAI-compatible server of the tests answering in 200 ms, at concurrency 1, 8 and 32; then the same 1,000
requests again, which the ledger must serve without a call.

    .venv/bin/python benchmarks/teacher_throughput.py              # about 5 minutes
    .venv/bin/python benchmarks/teacher_throughput.py --docs 200   # a quick look

Every request is answered, priced and committed to DuckDB one by one, as in a real run. JSON goes to
benchmarks/out/teacher_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_llm_server import FakeLLM  # noqa: E402  (the tests' server, run as its own process)

from kdstudio.interfaces import Doc, TeachContext  # noqa: E402
from kdstudio.plugins import get_plugins  # noqa: E402
from kdstudio.project import Project  # noqa: E402
from kdstudio.store import Ledger  # noqa: E402
from kdstudio.teaching import TeacherRunner  # noqa: E402

OUT = ROOT / "benchmarks" / "out"


def label_all(project: Project, server: FakeLLM, docs: list[Doc], concurrency: int) -> dict[str, float]:
    teacher = get_plugins().get("teacher", "llm").cls(model="openai/fake-model", api_base=server.api_base,
                                                      price_in=0.15, price_out=0.60, concurrency=concurrency)
    runner = TeacherRunner(Ledger(project.store), teacher, TeachContext(project.labels), None)
    started = time.perf_counter()
    outcome = runner.label(docs)
    wall = time.perf_counter() - started
    return {"concurrency": concurrency, "wall_s": wall, "calls": outcome.calls, "cache_hits": outcome.cache_hits,
            "labelled": len(outcome.labelled), "failed": len(outcome.failed),
            "calls_per_s": outcome.calls / wall if outcome.calls else 0.0,
            "labels_per_s": len(outcome.labelled) / wall, "usd": outcome.cost_usd}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per answer")
    parser.add_argument("--concurrency", default="1,8,32")
    args = parser.parse_args()
    work = OUT / "teacher_throughput"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results = []
    with FakeLLM(work) as server:
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            # A fresh project each time: an empty ledger, so every request is really sent.
            # All of the slice goes to the pool: no val or test split is needed here.
            project, _ = Project.from_dataset("bbc-news", work / f"c{concurrency}", limit=args.docs + 100,
                                              split={}, seed=1)
            with project:
                ids = project.store.ids_in_split("pool")[:args.docs]
                if len(ids) < args.docs:
                    raise SystemExit(f"bbc-news has only {len(ids)} distinct documents in that slice")
                docs = [Doc(d, t) for d, t in zip(ids, project.store.texts(ids), strict=True)]
                server.configure(delay=args.latency, confidence=0.9)
                row = label_all(project, server, docs, concurrency)
                row["server_requests"] = len(server.requests())
                results.append(row)
                print(f"concurrency {concurrency:>3}: {row['calls']} calls in {row['wall_s']:.1f}s = "
                      f"{row['calls_per_s']:.1f} calls/s ({row['failed']} failed, ${row['usd']:.4f})", flush=True)
                last = (project, docs, concurrency)
        project_dir = work / f"c{last[2]}"
        with Project.open(project_dir) as project:
            server.configure(delay=args.latency, confidence=0.9)
            rerun = label_all(project, server, last[1], last[2])
            rerun["server_requests"] = len(server.requests())
            rerun["hit_rate"] = rerun["cache_hits"] / len(last[1])
            print(f"re-run at concurrency {last[2]}: {rerun['cache_hits']}/{len(last[1])} from the ledger "
                  f"(hit rate {rerun['hit_rate']:.0%}), {rerun['server_requests']} requests sent, "
                  f"{rerun['wall_s']:.2f}s")
    base = results[0]["calls_per_s"]
    print("\nspeed-up over concurrency 1 (same run, same server):")
    for row in results:
        ideal = row["concurrency"]
        print(f"  concurrency {row['concurrency']:>3}: {row['calls_per_s'] / base:5.1f}x  (ideal {ideal}x; "
              f"floor {len(last[1]) * args.latency / ideal:.1f}s, measured {row['wall_s']:.1f}s)")
    (OUT / "teacher_throughput.json").write_text(json.dumps({"docs": args.docs, "latency_s": args.latency,
                                                              "runs": results, "rerun": rerun}, indent=2))


if __name__ == "__main__":
    main()
