"""The static-embedding tier: an encoder plugin distilled from the bundled MiniLM on first use (model2vec, offline,
cached once per machine), the loop and export on its vectors, the cascade of tiers, and what each refuses."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import CACHE, fresh_copy, run_cli

from kdstudio import runtime
from kdstudio.errors import KdError
from kdstudio.loop import DistillConfig
from kdstudio.project import Project
from kdstudio.runtime import BadModelFolder, Cascade, Classifier, open_model

pytestmark = pytest.mark.slow
STATIC = "static:all-MiniLM-L6-v2:pca256:t512"
MINILM = "all-MiniLM-L6-v2"
HOSTILE = ["", "   ", "[bold red]not markup[/]", "\x00\x1b[31m control \x7f", "émigré naïve café 東京 🙂",
           "word " * 20_000, "[UNK] [CLS] [SEP] [PAD]"]


@pytest.fixture(scope="module")
def static(static_build: dict) -> dict:
    """The static encoder's first use on this machine (conftest's static_build): its slice and what it printed."""
    return static_build


def _toml(directory: Path) -> dict:
    return tomllib.loads((directory / "kdstudio.toml").read_text(encoding="utf-8"))


def test_the_static_encoder_is_built_once_per_machine_and_becomes_the_projects(static: dict, tmp_path: Path):
    assert "static encoder built in" in static["first"].stderr
    assert f"embedded 239 documents with {STATIC}" in static["first"].stdout
    built = list((static["cache"] / "static").iterdir())
    assert [p.name.startswith("all-MiniLM-L6-v2-pca256-") for p in built] == [True]
    assert _toml(static["project"])["embedding"]["encoder"] == "static"
    # A second project on this machine pays nothing: no build, the same cached folder.
    other, _ = Project.from_dataset("bbc-news", tmp_path / "other", limit=60, seed=1)
    other.close()
    second = run_cli("embed", "-p", str(tmp_path / "other"), "--encoder", "static",
                     env={"KDSTUDIO_CACHE_DIR": str(static["cache"])})
    assert second.returncode == 0, second.stderr
    assert "built" not in second.stderr
    assert list((static["cache"] / "static").iterdir()) == built
    listed = run_cli("plugins")
    # The built-ins, and the test suite's own encoder (loaded through KDSTUDIO_PLUGINS like any plugin).
    assert "Encoders (3)" in listed.stdout and "static" in listed.stdout and "minilm" in listed.stdout


def test_vectors_of_several_encoders_coexist(with_minilm: dict):
    directory = with_minilm["project"]
    assert with_minilm["to_minilm"].embedded == 239 and with_minilm["encoder_then"] == "minilm"
    # Switching back computed nothing: the vectors were there.
    assert (with_minilm["back"].embedded, with_minilm["back"].already, with_minilm["key"]) == (0, 239, STATIC)
    with Project.open(directory, read_only=True) as project:
        _, static_vectors = project.store.embedding_matrix(STATIC)
        assert static_vectors.shape == (239, 256)
        np.testing.assert_allclose(np.linalg.norm(static_vectors, axis=1), 1.0, atol=1e-5)
        assert project.store.embedding_count(STATIC) == project.store.embedding_count(MINILM) == 239
    shown = run_cli("status", "-p", str(directory)).stdout
    assert f"{STATIC} (in use)" in shown and f"{MINILM} (in use)" not in shown and MINILM in shown


def test_a_static_student_exports_one_graph_the_runtime_runs_like_the_student(static: dict, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    directory = fresh_copy(static["project"], tmp_path)
    with Project.open(directory) as project:
        result = project.distill(DistillConfig(teacher="oracle", seed_size=20, batch=20, budget_labels=80))
        best = next(r for r in result.rounds if r.round == result.best_round)
        assert best.metrics["test"]["accuracy"] > 0.8
        report = project.export(tmp_path / "model")
        student, _ = project.load_student()
        in_process = student.predict_proba(project.embedder.encode(HOSTILE))
    assert report.parity is not None and report.parity.agreement == 1.0 and report.parity.max_prob_diff < 1e-5
    assert report.model.details["encoder"] == f"static ({STATIC})"
    meta = json.loads((tmp_path / "model" / "kdstudio_model.json").read_text())
    assert (meta["special_tokens"], meta["encoder"], meta["max_positions"]) == (False, "static", None)
    # Texts the tokenizer finds nothing in, markup, control characters and a 100,000-character text: as in-process.
    exported = Classifier(tmp_path / "model").predict_proba(HOSTILE)
    np.testing.assert_allclose(exported, in_process, atol=1e-5)
    assert np.isfinite(exported).all()
    # Tokenized a chunk at a time, in token-budget batches or fixed ones: the same numbers in the same order.
    monkeypatch.setattr(runtime, "CHUNK", 3)
    np.testing.assert_allclose(Classifier(tmp_path / "model").predict_proba(HOSTILE), exported, atol=1e-6)
    np.testing.assert_allclose(Classifier(tmp_path / "model", batch_size=2).predict_proba(HOSTILE), exported,
                               atol=1e-6)
    predicted = run_cli("predict", str(tmp_path / "model"), "-", input_text="\n".join(HOSTILE[2:5]) + "\n")
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.count("\n") == 4 and "[bold red]" not in predicted.stderr


def test_a_static_student_exports_to_int8_that_runs_and_keeps_its_labels(static: dict, tmp_path: Path):
    directory = fresh_copy(static["project"], tmp_path)
    with Project.open(directory) as project:
        project.distill(DistillConfig(teacher="oracle", seed_size=20, batch=20, budget_labels=60))
    result = run_cli("export", "-p", str(directory), "--out", str(tmp_path / "int8"), "--quantize", "int8")
    assert result.returncode == 0, result.stderr
    assert "same label as the in-process student for" in result.stdout
    meta = json.loads((tmp_path / "int8" / "kdstudio_model.json").read_text())
    assert meta["quantization"] == "int8"
    agreement = float(re.search(r"same label as the in-process student for ([\d.]+)%", result.stdout).group(1))
    assert agreement >= 97.0, result.stdout
    size = (tmp_path / "int8" / "model.onnx").stat().st_size
    fp32 = run_cli("export", "-p", str(directory), "--out", str(tmp_path / "fp32"))
    assert fp32.returncode == 0 and size < 0.6 * (tmp_path / "fp32" / "model.onnx").stat().st_size


def test_a_model2vec_folder_given_by_path_is_used_as_it_is(static: dict, tmp_path: Path):
    folder = next((CACHE / "static").iterdir())
    directory = fresh_copy(static["project"], tmp_path)
    given = run_cli("embed", "-p", str(directory), "--encoder", "static", "--model", str(folder))
    assert given.returncode == 0, given.stderr
    with Project.open(directory) as project:
        key = project.vector_key
        assert key == f"static:{folder.resolve()}:t512"
        ids, by_path = project.store.embedding_matrix(key)
        same_ids, distilled = project.store.embedding_matrix(STATIC)
    assert ids == same_ids
    np.testing.assert_allclose(by_path, distilled, atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--encoder", "nope"], "no encoder named 'nope'"),
    (["--encoder", "static", "--model", "/nonexistent/m2v"], "is not a local folder"),
    (["--encoder", "static", "--encoder-option", "pca_dims=many"], "option pca_dims: 'many' is not a whole number"),
    (["--encoder", "static", "--encoder-option", "colour=red"], "unknown option(s) ['colour']"),
])
def test_bad_encoder_settings_are_one_line_and_change_nothing(static: dict, tmp_path: Path, args: list[str],
                                                            message: str):
    directory = fresh_copy(static["project"], tmp_path)
    before = (directory / "kdstudio.toml").read_text()
    result = run_cli("embed", "-p", str(directory), *args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert (directory / "kdstudio.toml").read_text() == before


def test_a_broken_model2vec_folder_is_refused_in_one_line(static: dict, tmp_path: Path):
    broken = tmp_path / "m2v"
    shutil.copytree(next((CACHE / "static").iterdir()), broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    directory = fresh_copy(static["project"], tmp_path)
    before = (directory / "kdstudio.toml").read_text()
    result = run_cli("embed", "-p", str(directory), "--encoder", "static", "--model", str(broken))
    assert result.returncode != 0
    assert "is not a usable model2vec model" in result.stderr and "Traceback" not in result.stderr
    assert (directory / "kdstudio.toml").read_text() == before


def test_a_folder_that_is_no_model_is_refused_in_one_line_and_leaves_no_cache(static: dict, tmp_path: Path):
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "notes.txt").write_text("hello")
    directory = fresh_copy(static["project"], tmp_path)
    before = sorted(p.name for p in (CACHE / "static").iterdir())
    result = run_cli("embed", "-p", str(directory), "--encoder", "static", "--model", str(tmp_path / "not-a-model"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cannot distill a static encoder from" in result.stderr
    assert sorted(p.name for p in (CACHE / "static").iterdir()) == before  # nothing half built left behind


@pytest.fixture(scope="module")
def with_minilm(static: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The static slice with MiniLM's vectors beside its own, the static encoder the project's again: a switch to
    MiniLM in a test below finds them there. Embedded once for the module (about 20 s here), with what each switch
    reported, which test_vectors_of_several_encoders_coexist reads."""
    directory = fresh_copy(static["project"], tmp_path_factory.mktemp("with-minilm"))
    with Project.open(directory) as project:
        to_minilm = project.embed(encoder="minilm")
    encoder_then = _toml(directory)["embedding"]["encoder"]
    with Project.open(directory) as project:
        back = project.embed(encoder="static")
        key = project.vector_key
    return {"project": directory, "to_minilm": to_minilm, "encoder_then": encoder_then, "back": back, "key": key}


def test_runs_and_exports_refuse_vectors_of_another_encoder(with_minilm: dict, tmp_path: Path):
    directory = fresh_copy(with_minilm["project"], tmp_path)
    with Project.open(directory) as project:
        run = project.distill(DistillConfig(teacher="oracle", seed_size=20, batch=20, budget_labels=40))
        project.embed(encoder="minilm")
        with pytest.raises(KdError, match=f"learned from {STATIC} vectors; the project now embeds with {MINILM}"):
            project.export(tmp_path / "model")
        with pytest.raises(KdError, match=f"run {run.run_id} learned from {STATIC} vectors"):
            project.distill(resume=run.run_id, overrides={"budget_labels": 80})
    assert not (tmp_path / "model").exists()


@pytest.fixture(scope="module")
def cascade(with_minilm: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A MiniLM run on the same slice, exported as a cascade behind a static student from the command line."""
    base = tmp_path_factory.mktemp("cascade")
    directory = fresh_copy(with_minilm["project"], base)
    with Project.open(directory) as project:
        project.embed(encoder="minilm")
        project.distill(DistillConfig(teacher="oracle", seed_size=20, batch=20, budget_labels=80))
    built = run_cli("export", "-p", str(directory), "--out", str(base / "cascade"), "--cascade", "static",
                    "--defer-below", "0.5")
    return {"project": directory, "out": base / "cascade", "run": built}


def test_a_cascade_answers_with_the_static_tier_where_it_is_sure(cascade: dict):
    assert cascade["run"].returncode == 0, cascade["run"].stderr
    out = cascade["out"]
    spec = json.loads((out / "cascade.json").read_text())
    threshold = spec["tiers"][0]["answers_at_or_above"]
    assert [t["encoder"] for t in spec["tiers"]] == [STATIC, MINILM] and spec["defer_below"] == 0.5
    card = (out / "README.md").read_text()
    for part in ("## Tiers on the test split", "| fast | static:", "| slow | all-MiniLM-L6-v2 |", "Cascade accuracy",
                 "SIMULATED teacher"):
        assert part in card, part
    from huggingface_hub import ModelCard

    metadata = ModelCard(card).data.to_dict()  # the card carries the Hub's metadata too
    assert metadata["pipeline_tag"] == "text-classification" and "cascade" in metadata["tags"]
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["type"] == "accuracy"
    n_val = re.search(r"chosen on (\d+) validation documents", cascade["run"].stdout)
    assert n_val and int(n_val.group(1)) < 100  # the slice's validation split is small, and the export says so
    assert f"warning: the threshold was chosen on only {n_val.group(1)} validation documents" in \
        cascade["run"].stderr
    with Project.open(cascade["project"], read_only=True) as project:
        gold = project.store.gold()
        test = [d for d in project.store.ids_in_split("test") if d in gold]
        texts = project.store.texts(test)
    model = open_model(out)
    assert isinstance(model, Cascade)
    probs, tier = model.answer(texts)
    fast = Classifier(out / "fast").predict_proba(texts)
    slow = Classifier(out / "slow").predict_proba(texts)
    sure = fast.max(axis=1) >= threshold
    np.testing.assert_array_equal(tier, np.where(sure, 0, 1))
    np.testing.assert_allclose(probs, np.where(sure[:, None], fast, slow), atol=1e-6)
    predictions = model.predict(texts)
    assert {p.tier for p in predictions} <= {"fast", "slow"}
    assert all(p.label == "defer" for p, k in zip(predictions, tier, strict=True) if k == 1 and p.confidence < 0.5)
    assert all(p.label != "defer" for p, k in zip(predictions, tier, strict=True) if k == 0)


def test_predict_on_a_cascade_says_which_tier_answered(cascade: dict):
    result = run_cli("predict", str(cascade["out"]), "-", input_text="Shares fell as the bank cut its forecast.\n")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.strip().splitlines()
    assert '"tier"' in header and ('"fast"' in row or '"slow"' in row)
    refused = run_cli("predict", str(cascade["out"]), "-", "--engine", "ray", input_text="x\n")
    assert refused.returncode != 0 and "a cascade folder runs in this process only" in refused.stderr


def test_a_broken_cascade_description_is_one_clear_error(cascade: dict, tmp_path: Path):
    broken = tmp_path / "cascade"
    shutil.copytree(cascade["out"], broken)
    spec = json.loads((broken / "cascade.json").read_text())
    spec["tiers"][1]["folder"] = "../../etc"
    (broken / "cascade.json").write_text(json.dumps(spec))
    with pytest.raises(BadModelFolder, match="is not a kdstudio cascade description"):
        Cascade(broken)
    (broken / "cascade.json").write_text("{not json")
    result = run_cli("predict", str(broken), "-", input_text="x\n")
    assert result.returncode != 0 and "is not a kdstudio cascade description" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("key, value, message", [
    ("batch_size", "many", "batch_size must be a positive whole number, not 'many'"),
    ("char_limit", 0, "char_limit must be a positive whole number, not 0"),
    ("special_tokens", "no", "special_tokens must be true or false, not 'no'"),
    ("batch_tokens", -5, "batch_tokens must be a positive whole number, not -5"),
])
def test_a_hand_edited_tokenizing_setting_is_one_clear_error(cascade: dict, tmp_path: Path, key: str, value: object,
                                                            message: str):
    folder = tmp_path / "fast"
    shutil.copytree(cascade["out"] / "fast", folder)
    meta = json.loads((folder / "kdstudio_model.json").read_text())
    (folder / "kdstudio_model.json").write_text(json.dumps({**meta, key: value}))
    result = run_cli("predict", str(folder), "-", input_text="x\n")
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_a_cascade_on_an_encoder_the_student_already_reads_is_refused(static: dict, tmp_path: Path):
    directory = fresh_copy(static["project"], tmp_path)
    with Project.open(directory) as project:
        project.distill(DistillConfig(teacher="oracle", seed_size=20, batch=20, budget_labels=40))
        with pytest.raises(KdError, match="already reads static vectors"):
            project.export_cascade(tmp_path / "c", fast_encoder="static")
    assert not (tmp_path / "c").exists()
