"""The encoder tiers side by side in one run: static embeddings (model2vec distilled from the bundled MiniLM) against
MiniLM itself (in-process PyTorch, ONNX fp32, ONNX int8 per channel).

    .venv/bin/python benchmarks/tiers.py                     # all of it: about 25 minutes on 2 cores
    .venv/bin/python benchmarks/tiers.py --datasets bbc-news --docs 256
    .venv/bin/python benchmarks/tiers.py --datasets bbc-news --seeds 1 --cascade-on --int8-variants-on bbc-news

1. Speed on bbc-news (long articles) and reuters-r8 (short wires): embed docs/s of each encoder in-process, and
   predict docs/s of each exported student with the torch-free runtime, on the same documents and 2 threads.
2. int8 against fp32: labels kept, largest probability difference, on the test split.
3. Test accuracy of a logistic-regression student on each tier's vectors at 200 / 1000 / all gold labels of the pool
   (random samples, 3 seeds) on bbc-news, reuters-r8 and 20newsgroups.
4. The cascade (kdstudio.cascade, the code `kdstudio export --cascade static` runs): static student in front of the
   MiniLM int8 student, threshold chosen on the validation split; its test accuracy and docs/s against the MiniLM
   student alone.

It uses the benchmark projects in benchmarks/out/projects/ (imported and MiniLM-embedded by learning_curves.py, or
here if missing); static vectors are added beside the MiniLM ones without changing the projects' encoder. JSON goes
to benchmarks/out/tiers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path("benchmarks/out")
LABEL_COUNTS = (200, 1000, None)  # None: every gold label of the pool


def docs_per_s(fn: Callable[[list[str]], object], texts: list[str], min_seconds: float = 3.0) -> float:
    """Throughput over `texts`, repeated until `min_seconds` have passed (fast tiers finish one pass in a blink)."""
    fn(texts[:16])  # warm-up
    done, started = 0, time.perf_counter()
    while True:
        fn(texts)
        done += len(texts)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed


def open_project(dataset: str) -> Any:
    from kdstudio.project import Project

    directory = OUT / "projects" / dataset
    if Project.exists(directory):
        return Project.open(directory)
    project, _ = Project.from_dataset(dataset, directory)
    project.embed()
    return project


def encoders(project: Any) -> dict[str, Any]:
    """The project's MiniLM and the static encoder, each with its vectors in the store."""
    from kdstudio.config import EmbeddingSettings
    from kdstudio.embeddings import embed_missing

    minilm = project.encoder_for(EmbeddingSettings())
    static = project.encoder_for(EmbeddingSettings(encoder="static"))
    embed_missing(project.store, minilm)
    report = embed_missing(project.store, static, on_build=lambda step, done, total: None)
    if report.embedded:
        print(f"  {report.summary()}", flush=True)
    return {"minilm": minilm, "static": static}


def gold_split(project: Any, split: str) -> tuple[list[str], np.ndarray]:
    gold = project.store.gold()
    ids = [d for d in project.store.ids_in_split(split) if d in gold]
    return ids, np.array([project.labels.index(gold[d]) for d in ids], dtype=np.int64)


def fit(project: Any, key: str, ids: list[str], y: np.ndarray) -> Any:
    from kdstudio.threads import sized_pools

    student = project.plugins.get("student", "logreg").cls()
    with sized_pools():
        student.fit(project.store.vectors(key, ids), y, len(project.labels))
    return student


def accuracy_at_counts(project: Any, tiers: dict[str, Any], seeds: int) -> dict[str, dict[str, float]]:
    pool, pool_y = gold_split(project, "pool")
    test, test_y = gold_split(project, "test")
    result: dict[str, dict[str, float]] = {}
    for name, encoder in tiers.items():
        test_x = project.store.vectors(encoder.key, test)
        for count in LABEL_COUNTS:
            scores = []
            for seed in range(seeds if count else 1):
                pick = np.sort(np.random.default_rng(seed).permutation(len(pool))[:count]) if count else \
                    np.arange(len(pool))
                student = fit(project, encoder.key, [pool[i] for i in pick], pool_y[pick])
                scores.append(float((student.predict_proba(test_x).argmax(1) == test_y).mean()))
            result.setdefault(name, {})[str(count or "all")] = float(np.mean(scores))
    return result


def exported_tiers(project: Any, tiers: dict[str, Any], work: Path) -> dict[str, Any]:
    """Students at 1000 gold labels on each tier, exported: static fp32, MiniLM fp32 and int8."""
    from kdstudio.interfaces import ExportContext

    pool, pool_y = gold_split(project, "pool")
    pick = np.sort(np.random.default_rng(0).permutation(len(pool))[:1000])
    ids, y = [pool[i] for i in pick], pool_y[pick]
    exporter = project.plugins.get("exporter", "onnx").cls()
    students = {name: fit(project, enc.key, ids, y) for name, enc in tiers.items()}
    folders = {}
    for name, encoder, quantize in (("static", tiers["static"], None), ("minilm-fp32", tiers["minilm"], None),
                                    ("minilm-int8", tiers["minilm"], "int8")):
        folders[name] = work / name
        exporter.export(students[name.split("-")[0]], folders[name], ExportContext(project.labels, encoder, quantize))
    return {"students": students, "folders": folders}


def speed(project: Any, tiers: dict[str, Any], built: dict[str, Any], texts: list[str]) -> dict[str, float]:
    from kdstudio.runtime import Classifier

    head = built["students"]["minilm"]
    result = {"embed static": docs_per_s(tiers["static"].encode, texts),
              "embed minilm (PyTorch)": docs_per_s(tiers["minilm"].encode, texts, 0.0),
              "predict minilm (PyTorch)": docs_per_s(lambda t: head.predict_proba(tiers["minilm"].encode(t)), texts,
                                                     0.0)}
    for name, folder in built["folders"].items():
        runtime = Classifier(folder, threads=2, providers=["CPUExecutionProvider"])
        result[f"predict {name} (ONNX)"] = docs_per_s(runtime.predict_proba, texts, 3.0 if name == "static" else 0.0)
    return result


def int8_agreement(project: Any, built: dict[str, Any], limit: int) -> dict[str, float]:
    from kdstudio.runtime import Classifier

    test, _ = gold_split(project, "test")
    texts = project.store.texts(test[:limit])
    fp32 = Classifier(built["folders"]["minilm-fp32"]).predict_proba(texts)
    int8 = Classifier(built["folders"]["minilm-int8"]).predict_proba(texts)
    return {"documents": len(texts), "agreement": float((fp32.argmax(1) == int8.argmax(1)).mean()),
            "max_prob_diff": float(np.abs(fp32 - int8).max())}


def int8_variants(project: Any, built: dict[str, Any], work: Path, limit: int) -> dict[str, dict[str, float]]:
    """The fp32 export quantized three ways: labels kept against fp32, largest probability difference, docs/s."""
    import logging
    import shutil

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from kdstudio.runtime import Classifier

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice about static quantization
    test, _ = gold_split(project, "test")
    pool, _ = gold_split(project, "pool")
    texts = project.store.texts((test + pool)[:limit])
    source = built["folders"]["minilm-fp32"]
    fp32 = Classifier(source, threads=2).predict_proba(texts)
    head = [n.name for n in onnx.load(str(source / "model.onnx")).graph.node if n.name.startswith("head/")]
    result = {}
    for name, options in (("per-tensor", {}), ("per-channel", {"per_channel": True}),
                          ("per-channel, reduced range", {"per_channel": True, "reduce_range": True})):
        folder = work / f"int8 {name}"
        shutil.copytree(source, folder, dirs_exist_ok=True)
        quantize_dynamic(str(source / "model.onnx"), str(folder / "model.onnx"), weight_type=QuantType.QInt8,
                         nodes_to_exclude=head, **options)
        started = time.perf_counter()
        probs = Classifier(folder, threads=2).predict_proba(texts)
        result[name] = {"agreement": float((probs.argmax(1) == fp32.argmax(1)).mean()),
                        "max_prob_diff": float(np.abs(probs - fp32).max()),
                        "docs_per_s": len(texts) / (time.perf_counter() - started)}
        print(f"  int8 {name:<27} {result[name]['agreement']:.1%} of labels kept against fp32 on {len(texts)} "
              f"documents, largest probability difference {result[name]['max_prob_diff']:.3f}, "
              f"{result[name]['docs_per_s']:.1f} docs/s", flush=True)
    return result


def cascade(project: Any, tiers: dict[str, Any], built: dict[str, Any], work: Path, limit: int) -> dict[str, Any]:
    from kdstudio.cascade import CascadeInputs, build_cascade
    from kdstudio.interfaces import ExportContext
    from kdstudio.runtime import Cascade, Classifier

    val, val_y = gold_split(project, "val")
    test, test_y = gold_split(project, "test")
    test, test_y = test[:limit], test_y[:limit]
    fast, slow = built["students"]["static"], built["students"]["minilm"]
    inputs = CascadeInputs(fast, slow, ExportContext(project.labels, tiers["static"]),
                           ExportContext(project.labels, tiers["minilm"], "int8"),
                           fast.predict_proba(project.store.vectors(tiers["static"].key, val)),
                           slow.predict_proba(project.store.vectors(tiers["minilm"].key, val)), val_y,
                           project.store.texts(test), test_y, None, None)
    report = build_cascade(inputs, project.plugins.get("exporter", "onnx").cls(), work / "cascade", [],
                           {"project": project.config.name})
    texts = inputs.test_texts
    both = Cascade(work / "cascade", threads=2, providers=["CPUExecutionProvider"])
    alone = Classifier(work / "cascade" / "slow", threads=2, providers=["CPUExecutionProvider"])
    return {"threshold": report.threshold, "accuracy": report.accuracy, "minilm_int8_accuracy": report.slow_accuracy,
            "static_share": report.tiers[0].share, "static_accuracy_there": report.tiers[0].accuracy,
            "documents": len(texts), "cascade_docs_per_s": docs_per_s(both.predict_proba, texts, 0.0),
            "minilm_int8_docs_per_s": docs_per_s(alone.predict_proba, texts, 0.0)}


def run_dataset(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n== {dataset}", flush=True)
    project = open_project(dataset)
    with project:
        tiers = encoders(project)
        result: dict[str, Any] = {"accuracy": accuracy_at_counts(project, tiers, args.seeds)}
        print("  test accuracy (logreg) at 200 / 1000 / all labels: " + "; ".join(
            f"{name} " + " / ".join(f"{v:.3f}" for v in acc.values()) for name, acc in result["accuracy"].items()),
            flush=True)
        if dataset not in args.speed_on + args.cascade_on + args.int8_variants_on:
            return result
        work = OUT / "tiers" / dataset
        built = exported_tiers(project, tiers, work)
        if dataset in args.speed_on:
            test, _ = gold_split(project, "test")
            texts = project.store.texts(test[:args.docs])
            result["speed"] = speed(project, tiers, built, texts)
            result["int8"] = int8_agreement(project, built, args.agreement_docs)
            print_speed(result["speed"], result["int8"])
        if dataset in args.int8_variants_on:
            result["int8_variants"] = int8_variants(project, built, work, args.agreement_docs)
        if dataset in args.cascade_on:
            result["cascade"] = cascade(project, tiers, built, work, args.cascade_docs)
            c = result["cascade"]
            print(f"  cascade: static answers {c['static_share']:.1%} (accuracy there {c['static_accuracy_there']:.3f}"
                  f"); accuracy {c['accuracy']:.3f} vs MiniLM int8 alone {c['minilm_int8_accuracy']:.3f} "
                  f"({(c['accuracy'] - c['minilm_int8_accuracy']) * 100:+.1f} pt); {c['cascade_docs_per_s']:.1f} vs "
                  f"{c['minilm_int8_docs_per_s']:.1f} docs/s "
                  f"({c['cascade_docs_per_s'] / c['minilm_int8_docs_per_s']:.1f}x), {c['documents']} test documents",
                  flush=True)
    return result


def print_speed(speed: dict[str, float], int8: dict[str, float]) -> None:
    for name, rate in speed.items():
        print(f"  {name:<28} {rate:10.1f} docs/s", flush=True)
    int8_rate = speed["predict minilm-int8 (ONNX)"]
    print(f"  static vs MiniLM int8: embed {speed['embed static'] / int8_rate:.1f}x, predict "
          f"{speed['predict static (ONNX)'] / int8_rate:.1f}x; int8 vs PyTorch student "
          f"{int8_rate / speed['predict minilm (PyTorch)']:.2f}x, vs fp32 ONNX "
          f"{int8_rate / speed['predict minilm-fp32 (ONNX)']:.2f}x", flush=True)
    print(f"  int8 vs fp32 on {int8['documents']} test documents: {int8['agreement']:.1%} labels kept, largest "
          f"probability difference {int8['max_prob_diff']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["bbc-news", "reuters-r8", "20newsgroups"])
    parser.add_argument("--speed-on", nargs="*", default=["bbc-news", "reuters-r8"])
    parser.add_argument("--cascade-on", nargs="*", default=["bbc-news", "reuters-r8", "20newsgroups"])
    parser.add_argument("--int8-variants-on", nargs="*", default=[],
                        help="also quantize the MiniLM export per tensor, per channel, per channel in reduced range")
    parser.add_argument("--docs", type=int, default=256, help="test documents timed per tier")
    parser.add_argument("--agreement-docs", type=int, default=1000)
    parser.add_argument("--cascade-docs", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    results = {d: run_dataset(d, args) for d in args.datasets}
    (OUT / "tiers.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
