"""ONNX export, the torch-free runtime, `kdstudio predict`, parity with the in-process student, int8, deferral."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import fresh_copy, run_cli

from kdstudio.interfaces import Student
from kdstudio.loop import DistillConfig
from kdstudio.plugins import get_plugins
from kdstudio.project import Project
from kdstudio.runtime import BadModelFolder, Classifier

# ONNX export and the runtime: the slow tier's, every test of them.
pytestmark = pytest.mark.slow
HEADS = ["logreg", "svm", "lda", "rf", "gbdt"]


def _head_probabilities(student: Student, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(student.onnx_graph(17).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"embedding": X})[0]


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("seen", ["all", "some", "one-example", "one-class"])
def test_every_head_exports_to_the_same_probabilities(name: str, seen: str):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 12)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = {"all": np.arange(60) % 4, "some": np.arange(60) % 2 * 3,  # classes 0 and 3 of 4
         "one-example": np.r_[np.zeros(59, int), [2]],  # too few to calibrate: the SVM falls back to margins
         "one-class": np.full(60, 1)}[seen]
    student = get_plugins().get("student", name).cls()
    student.fit(X, y, 4)
    exported = _head_probabilities(student, X)
    assert exported.shape == (60, 4)
    np.testing.assert_allclose(exported, student.predict_proba(X), atol=2e-6)


# -- the whole path on a slice of bbc-news ------------------------------------------------------------------


def _test_split(project_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    with Project.open(project_dir, read_only=True) as project:
        student, _ = project.load_student()
        gold = project.store.gold()
        ids = [d for d in project.store.ids_in_split("test") if d in gold]
        texts = project.store.texts(ids)
        in_process = student.predict_proba(project.store.vectors(project.config.embedding.model, ids))
        y = np.array([project.labels.index(gold[d]) for d in ids])
        return texts, in_process, y, project.labels




def test_export_writes_one_graph_tokenizer_labels_and_a_card(exported: dict):
    assert exported["fp32_run"].returncode == 0, exported["fp32_run"].stderr
    out = exported["fp32"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "kdstudio_model.json", "labels.json", "model.onnx",
                                                     "tokenizer.json"]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["probabilities", "label", "confidence"]
    assert json.loads((out / "labels.json").read_text()) == ["business", "entertainment", "politics", "sports",
                                                             "tech"]
    card = (out / "README.md").read_text()
    for part in ("## Intended use", "## Licence", "apache-2.0", "### Labels the student trained on",
                 "60 labels: 60 from the teacher, 0 from people", "## Teacher and cost", "SIMULATED TEACHER",
                 "labels: 60 training documents sent to the teacher", "teacher calls paid: ", "reused from earlier",
                 "## Metrics", "this model, test (gold labels", "## Deferral", "| 0.90 |", "## Limitations",
                 "Only the first 256 tokens", "kdstudio 0.1.0", "Imported from: dataset:bbc-news"):
        assert part in card, part
    assert "same label as the in-process student for 100.0%" in exported["fp32_run"].stdout
    assert "export:" not in exported["fp32_run"].stderr  # steps are for a terminal (the TUI test watches them)


def test_the_model_card_is_a_hugging_face_card_with_its_metadata(exported: dict):
    from huggingface_hub import ModelCard

    card = ModelCard((exported["fp32"] / "README.md").read_text())
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0" and data["language"] == ["en"]
    assert data["pipeline_tag"] == "text-classification" and "knowledge-distillation" in data["tags"]
    assert data["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    result = data["model-index"][0]["results"][0]
    accuracy = next(m["value"] for m in result["metrics"] if m["type"] == "accuracy")
    texts, _, y, labels = _test_split(exported["project"])
    exported_accuracy = (Classifier(exported["fp32"]).predict_proba(texts).argmax(1) == y).mean()
    assert accuracy == pytest.approx(exported_accuracy, abs=1e-4)
    # The training labels' distribution is the one the kept student learned from.
    rows = dict(re.findall(r"^\| (\w+) \| (\d+) \| [\d.]+% \|$", card.text, re.MULTILINE))
    assert set(rows) == set(labels) and sum(map(int, rows.values())) == 60
    # Without --license the metadata says `other` and the card says how to state one.
    unlicensed = ModelCard((exported["int8"] / "README.md").read_text())
    assert unlicensed.data.to_dict()["license"] == "other" and "--license SPDX-ID" in unlicensed.text


def test_fp32_agrees_with_the_student_and_int8_loses_at_most_a_point(exported: dict):
    texts, in_process, y, _ = _test_split(exported["project"])
    fp32 = Classifier(exported["fp32"]).predict_proba(texts)
    assert (fp32.argmax(1) == in_process.argmax(1)).mean() >= 0.995
    assert np.abs(fp32 - in_process).max() < 1e-4
    assert exported["int8_run"].returncode == 0, exported["int8_run"].stderr
    int8 = Classifier(exported["int8"]).predict_proba(texts)
    accuracy = (in_process.argmax(1) == y).mean()
    assert (int8.argmax(1) == y).mean() >= accuracy - 0.01
    # Per-channel scales keep 99.2-99.5% of a 1000-label student's labels (benchmarks/tiers.py); this 60-label
    # student sits closer to its decision boundaries, so a few of its ~60 test labels may move, and when more than 1%
    # do, export says so with the figure.
    agreement = (int8.argmax(1) == fp32.argmax(1)).mean()
    assert agreement >= 0.95
    warned = "warning: the exported model gives the in-process student's label on only" in exported["int8_run"].stderr
    assert warned == (agreement < 0.99)
    assert exported["int8"].joinpath("model.onnx").stat().st_size < exported["fp32"].joinpath(
        "model.onnx").stat().st_size / 3


def test_predict_keeps_every_row_in_order_in_every_format(exported: dict, tmp_path: Path):
    texts, in_process, _, labels = _test_split(exported["project"])
    texts = texts[:12]
    ids = [f"doc-{i}" for i in range(12)]
    expected = [labels[i] for i in in_process[:12].argmax(1)]
    table = pa.table({"id": ids, "body": texts})
    pq.write_table(table, tmp_path / "in.parquet")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in zip(ids, texts,
                                                                                                      strict=True)))
    import pyarrow.csv as pacsv
    pacsv.write_csv(table, tmp_path / "in.csv")
    for name in ("in.parquet", "in.jsonl", "in.csv"):
        out = tmp_path / f"{name}.out.jsonl"
        result = run_cli("predict", str(exported["fp32"]), str(tmp_path / name), "--text-column", "body",
                         "--out", str(out))
        assert result.returncode == 0, result.stderr
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["id"] for r in rows] == ids and [r["row"] for r in rows] == list(range(1, 13))
        assert [r["label"] for r in rows] == expected
        assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)
    csv_out = run_cli("predict", str(exported["fp32"]), str(tmp_path / "in.csv"), "--text-column", "body",
                      "--defer-below", "0.999")
    assert csv_out.returncode == 0, csv_out.stderr
    lines = csv_out.stdout.splitlines()
    assert lines[0].startswith('"row","id","label","confidence","predicted","p_business"') and len(lines) == 13
    assert all('"defer"' in line for line in lines[1:])  # nothing is that sure: every row deferred
    stdin = subprocess.run([sys.executable, "-m", "kdstudio", "predict", str(exported["fp32"]), "-"],
                           input="".join(t.replace("\n", " ") + "\n" for t in texts[:3]), capture_output=True,
                           text=True, timeout=120)
    assert stdin.returncode == 0 and len(stdin.stdout.splitlines()) == 4


def test_the_runtime_never_imports_torch_or_transformers(exported: dict):
    code = ("import sys; from kdstudio.runtime import Classifier; "
            f"print(Classifier({str(exported['int8'])!r}).predict(['a football match'])[0].label); "
            "print([m for m in ('torch', 'transformers', 'sentence_transformers', 'sklearn', 'litellm') "
            "if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
    cli = subprocess.run([sys.executable, "-X", "importtime", "-m", "kdstudio", "predict", str(exported["int8"]), "-"],
                         input="a football match\n", capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in cli.stderr.splitlines() if "|" in line}
    assert "onnxruntime" in imported and "tokenizers" in imported
    assert not imported & {"torch", "transformers", "sentence_transformers", "sklearn", "litellm"}


@pytest.mark.parametrize(("damage", "message"), [
    ("missing", "lacks tokenizer.json"),
    ("labels-not-json", "labels.json is not valid JSON"),
    ("labels-count", "names 3 labels but the model predicts 5 classes"),
    ("corrupt-onnx", "model.onnx is not a usable ONNX model"),
])
def test_a_damaged_model_folder_gets_a_clear_error(exported: dict, tmp_path: Path, damage: str, message: str):
    folder = tmp_path / "model"
    shutil.copytree(exported["int8"], folder)
    if damage == "missing":
        (folder / "tokenizer.json").unlink()
    elif damage == "labels-not-json":
        (folder / "labels.json").write_text("business, tech")
    elif damage == "labels-count":
        (folder / "labels.json").write_text('["a", "b", "c"]')
    else:
        (folder / "model.onnx").write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(BadModelFolder, match=message):
        Classifier(folder)
    result = run_cli("predict", str(folder), "-")
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_predict_input_errors_are_clear(exported: dict, tmp_path: Path):
    (tmp_path / "in.csv").write_text("id,text\n1,fine\n2,\n")
    missing = run_cli("predict", str(exported["int8"]), str(tmp_path / "in.csv"), "--text-column", "body")
    assert missing.returncode == 1 and "has no column 'body' (it has: id, text)" in missing.stderr
    (tmp_path / "nulls.jsonl").write_text('{"text": "a"}\n{"text": null}\n')
    nulls = run_cli("predict", str(exported["int8"]), str(tmp_path / "nulls.jsonl"))
    assert nulls.returncode == 1 and "rows 2 have no text" in nulls.stderr


def test_a_fine_tuned_student_exports_whole(exported: dict, tmp_path: Path):
    directory = tmp_path / "bbc"
    shutil.copytree(exported["project"], directory, ignore=shutil.ignore_patterns("students"))
    with Project.open(directory) as project:
        result = project.distill(DistillConfig(teacher="oracle", student="finetune", seed_size=16, batch=8,
                                               budget_labels=16, val_limit=20, test_limit=24,
                                               student_options={"epochs": 1, "max_length": 64}))
        report = project.export(tmp_path / "ft", student_id=result.student_id)
    assert report.parity is not None and report.parity.n > 0
    assert report.parity.agreement >= 0.995 and report.parity.max_prob_diff < 1e-4
    assert json.loads((tmp_path / "ft" / "kdstudio_model.json").read_text())["max_length"] == 64


def test_a_model_file_whose_bytes_changed_is_refused(exported: dict, tmp_path: Path):
    folder = tmp_path / "model"
    shutil.copytree(exported["int8"], folder)
    meta = json.loads((folder / "kdstudio_model.json").read_text())
    assert set(meta["sha256"]) == {"model.onnx", "tokenizer.json", "labels.json"}
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["normalizer"] = None  # still a valid tokenizer: only the checksum can tell
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(BadModelFolder, match=r"tokenizer\.json is not the file that was exported"):
        Classifier(folder)
    result = run_cli("predict", str(folder), "-", input_text="a football match\n")
    assert result.returncode == 1 and "is not the file that was exported" in result.stderr


def test_an_export_onto_a_full_disk_is_one_line_and_keeps_the_old_model(exported: dict, tmp_path: Path):
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small file system")
    disk = tmp_path / "disk"
    disk.mkdir()
    size = sum(p.stat().st_size for p in exported["int8"].iterdir()) + 8_000_000  # room for the int8 model only
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)]).returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        shutil.copytree(exported["int8"], disk / "model")
        before = {p.name: p.read_bytes() for p in (disk / "model").iterdir()}
        result = run_cli("export", "-p", str(exported["project"]), "--out", str(disk / "model"))
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("Error: the system refused: No space left on device"), result.stderr
        assert "Fix: free some disk space" in result.stderr
        assert {p.name: p.read_bytes() for p in (disk / "model").iterdir()} == before
        assert not [p for p in disk.iterdir() if p.name != "model"]  # nothing half-written left beside it
        Classifier(disk / "model").predict(["a football match"])
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_the_minilm_graph_is_exported_once_a_machine(exported: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from conftest import CACHE

    cached = list((CACHE / "onnx").glob("all-MiniLM-L6-v2-*.onnx"))
    assert len(cached) == 1  # the fixture's exports made it, once

    def no_torch_export(*args, **kwargs):
        raise AssertionError("the cached graph should have been used")

    monkeypatch.setattr("kdstudio_plugins.encoders.minilm.torch_to_onnx", no_torch_export)
    with Project.open(fresh_copy(exported["project"], tmp_path)) as project:
        report = project.export(tmp_path / "again")
    assert report.parity is not None and report.parity.agreement == 1.0
