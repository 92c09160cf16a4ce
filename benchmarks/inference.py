"""Inference speed of a distilled student: the in-process PyTorch path (sentence-transformers encoder and the
scikit-learn head), the exported ONNX fp32 model and the ONNX int8 model, on the same documents and the same
2 CPU threads, measured side by side in one run; beside them, what the teacher costs per document.

    .venv/bin/python benchmarks/inference.py                       # bbc-news demo project, ~5 minutes
    .venv/bin/python benchmarks/inference.py --docs 256 --project kdstudio-demo

It distills a student if the project has none, exports it (fp32 and int8) into benchmarks/out/inference/, and
prints documents/s and p50/p99 latency at batch 1 and batch 64. JSON goes to benchmarks/out/inference.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

OUT = Path("benchmarks/out")
# "Up to 130x faster and 25x cheaper than the LLM at inference" is PGKD's claim (Di Palo et al., arXiv 2411.05045).
PAPER_TEACHER = "PGKD paper's figure (no LLM calls in this project's ledger)"


def timed(fn: Callable[[list[str]], object], texts: list[str], batch: int, repeats: int = 1) -> dict[str, float]:
    """docs/s over all texts in batches of `batch`, and p50/p99 latency of one batch call."""
    fn(texts[:batch])  # warm-up: first-call allocations are not what a service pays per request
    latencies = []
    started = time.perf_counter()
    for _ in range(repeats):
        for start in range(0, len(texts), batch):
            t0 = time.perf_counter()
            fn(texts[start:start + batch])
            latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    return {"docs_per_s": repeats * len(texts) / wall, "p50_ms": float(np.percentile(latencies, 50) * 1e3),
            "p99_ms": float(np.percentile(latencies, 99) * 1e3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=str(OUT / "inference" / "bbc"))
    parser.add_argument("--docs", type=int, default=512, help="documents timed at batch 64")
    parser.add_argument("--single", type=int, default=128, help="documents timed one at a time")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    from kdstudio.loop import DistillConfig
    from kdstudio.project import Project
    from kdstudio.runtime import Classifier

    torch.set_num_threads(args.threads)
    directory = Path(args.project)
    if Project.exists(directory):
        project = Project.open(directory)
    else:
        project, _ = Project.from_dataset("bbc-news", directory)
    with project:
        project.embed()
        if not project.runs():
            project.distill(DistillConfig(teacher="zeroshot", budget_labels=200))
        student, record = project.load_student()
        models = {}
        for precision in ("fp32", "int8"):
            out = OUT / "inference" / f"model-{precision}"
            report = project.export(out, student_id=record["id"], quantize=None if precision == "fp32" else "int8")
            models[precision] = (out, report.parity)
        ids = project.store.ids_in_split("test") + project.store.ids_in_split("pool")
        texts = project.store.texts(ids[:max(args.docs, args.single)])
        encoder = project.embedder
        rows = project.cost()
        calls = sum(r.label_calls for r in rows if r.tokens_in)
        latency = [r.mean_latency_s for r in rows if r.tokens_in and r.mean_latency_s]
        teacher = {"source": "ledger", "s_per_doc": float(np.mean(latency)),
                   "usd_per_doc": sum(r.usd for r in rows) / max(calls, 1)} if latency else \
            {"source": PAPER_TEACHER, "speedup_claim": 130, "cost_claim": 25}

    def pytorch(batch_texts: list[str]) -> object:
        return student.predict_proba(encoder.encode(batch_texts))

    runtimes = {"pytorch": pytorch}
    for precision, (path, _) in models.items():
        classifier = Classifier(path, threads=args.threads, providers=["CPUExecutionProvider"])
        runtimes[f"onnx-{precision}"] = classifier.predict_proba

    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, fn in runtimes.items():
        results[name] = {"batch 64": timed(fn, texts[:args.docs], 64),
                         "batch 1": timed(fn, texts[:args.single], 1)}
        print(f"{name:<10} " + "  ".join(f"{b}: {r['docs_per_s']:6.1f} docs/s p50 {r['p50_ms']:7.1f} ms "
                                         f"p99 {r['p99_ms']:7.1f} ms" for b, r in results[name].items()), flush=True)
    print(f"\nratios against the PyTorch student ({args.threads} threads, {args.docs} bbc-news documents):")
    for name in runtimes:
        ratios = [results[name][b]["docs_per_s"] / results["pytorch"][b]["docs_per_s"] for b in ("batch 64", "batch 1")]
        print(f"  {name:<10} batch 64: {ratios[0]:4.2f}x   batch 1: {ratios[1]:4.2f}x")
    for precision, (_, parity) in models.items():
        if parity is not None:
            print(f"  onnx-{precision} on the test split: accuracy {parity.exported_accuracy:.3f} "
                  f"(in-process {parity.student_accuracy:.3f}), agreement {parity.agreement:.1%}")
    if teacher["source"] == "ledger":
        best = results["onnx-int8"]["batch 1"]["p50_ms"] / 1e3
        print(f"\nteacher (from the ledger): {teacher['s_per_doc']:.2f} s and ${teacher['usd_per_doc']:.6f} per "
              f"document; the int8 student answers one document in {best * 1e3:.1f} ms "
              f"({teacher['s_per_doc'] / best:.0f}x faster) for no per-call fee")
    else:
        print(f"\nteacher: {PAPER_TEACHER}: the student is up to {teacher['speedup_claim']}x faster and "
              f"{teacher['cost_claim']}x cheaper than the LLM")
    (OUT / "inference.json").write_text(json.dumps({"threads": args.threads, "results": results,
                                                     "teacher": teacher}, indent=2))


if __name__ == "__main__":
    main()
