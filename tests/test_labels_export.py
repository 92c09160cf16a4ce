"""The labels out (`kdstudio labels export`): CSV, JSONL and Parquet hold the same rows, one per labelled document with
its current label and who gave it; a Parquet export loads with Hugging Face `datasets` as it is; filters; the dataset
card; and attacks: a bad name, no match and a failed write leave what was there."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import cheap_slice, cli, fresh_copy

from kdstudio.loop import DistillConfig
from kdstudio.project import Project
from kdstudio.store import ImportOptions
from kdstudio.store.labelled import LabelFilter
from kdstudio.store.ledger import Ledger

NASTY = 'a [bold]tag[/bold] \x1b[31mred\x1b[0m, "quoted"\nnext line | pipe'


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A bbc-news slice: a run's teacher labels (a noisy simulated teacher), a person's correction of one of them, a
    person's label on a document with markup and control characters in it, and the corpus's gold labels."""
    base = tmp_path_factory.mktemp("labels")
    directory = cheap_slice(base / "bbc", limit=120, seed=8)
    nasty = base / "nasty.jsonl"
    nasty.write_text(json.dumps({"id": "nasty,1", "text": NASTY}) + "\n", encoding="utf-8")
    with Project.open(directory) as project:
        project.import_file(nasty, ImportOptions(id_column="id"))
        project.embed()
        run = project.distill(DistillConfig(teacher="oracle", teacher_options={"noise": 0.3}, selector="margin",
                                            seed_size=10, batch=10, budget_labels=30, seed=1))
        teacher = project.store.con.execute(
            "SELECT doc_id, label FROM labels WHERE source = 'teacher' ORDER BY doc_id").fetchall()
        corrected, said = teacher[0]
        other = next(label for label in project.labels if label != said)
        ledger = Ledger(project.store)
        ledger.add_human_label(corrected, other, annotator="ann [1]\x1b]0;x\x07")
        ledger.add_human_label("nasty,1", project.labels[0], annotator="bob")
        gold = dict(project.store.con.execute("SELECT doc_id, label FROM gold").fetchall())
    return {"project": directory, "run": run.run_id, "teacher": dict(teacher), "corrected": corrected,
            "correction": other, "gold": gold}


def export(labelled: dict, tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    result = cli("labels", "export", "-p", str(labelled["project"]), "--out", str(out), *args)
    assert result.returncode == 0, result.stderr
    assert "written to" in result.stdout and "\x1b" not in result.stdout
    return out


def test_a_parquet_export_loads_with_hugging_face_datasets_as_it_is(labelled: dict, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    out = export(labelled, tmp_path, "labels.parquet")
    table = pq.read_table(out)
    loaded = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == table.num_rows and loaded.column_names == table.column_names
    assert loaded["id"] == table.column("id").to_pylist() and loaded["label"] == table.column("label").to_pylist()
    rows = {r["id"]: r for r in table.to_pylist()}
    # Every document with a label, once: the run's teacher labels, people's, and the corpus's gold.
    assert set(rows) == set(labelled["teacher"]) | set(labelled["gold"]) | {"nasty,1"}
    fixed = rows[labelled["corrected"]]
    assert (fixed["label"], fixed["source"], fixed["annotator"]) == (labelled["correction"], "human",
                                                                     "ann [1]\x1b]0;x\x07")
    assert fixed["teacher_label"] == labelled["teacher"][labelled["corrected"]]  # the teacher's own answer kept
    for doc_id, label in labelled["teacher"].items():
        if doc_id != labelled["corrected"]:
            row = rows[doc_id]
            assert (row["label"], row["source"], row["run_id"]) == (label, "teacher", labelled["run"])
            assert row["teacher_model"].startswith("oracle") and 0 <= row["teacher_confidence"] <= 1
    assert rows["nasty,1"]["text"] == NASTY and rows["nasty,1"]["gold_label"] is None
    gold_only = [r for r in rows.values() if r["source"] == "gold"]
    assert gold_only and all(r["label"] == r["gold_label"] and r["teacher_label"] is None for r in gold_only)
    assert {r["split"] for r in rows.values()} >= {"pool"} and not any(r["generated"] for r in rows.values())
    assert all(r["suspicion"] is None for r in rows.values())  # not asked for


def test_csv_and_jsonl_hold_the_same_rows_as_parquet(labelled: dict, tmp_path: Path):
    expected = pq.read_table(export(labelled, tmp_path, "a.parquet")).to_pylist()
    with export(labelled, tmp_path, "a.csv").open(newline="", encoding="utf-8") as handle:
        from_csv = list(csv.DictReader(handle))
    from_jsonl = [json.loads(line) for line in export(labelled, tmp_path, "a.JSONL").read_text("utf-8").splitlines()]
    assert from_jsonl == expected
    assert [(r["id"], r["text"], r["label"], r["source"]) for r in from_csv] == \
        [(r["id"], r["text"], r["label"], r["source"]) for r in expected]


def test_the_filters_pick_by_source_split_run_and_suspicion(labelled: dict, tmp_path: Path):
    humans = pq.read_table(export(labelled, tmp_path, "h.parquet", "--source", "human")).to_pylist()
    assert sorted(r["id"] for r in humans) == sorted([labelled["corrected"], "nasty,1"])
    bought = pq.read_table(export(labelled, tmp_path, "r.parquet", "--run", str(labelled["run"]))).to_pylist()
    assert sorted(r["id"] for r in bought) == sorted(labelled["teacher"])
    val = pq.read_table(export(labelled, tmp_path, "v.parquet", "--split", "val", "--split", "test")).to_pylist()
    assert val and {r["split"] for r in val} <= {"val", "test"}
    suspect = pq.read_table(export(labelled, tmp_path, "s.parquet", "--min-suspicion", "0.5")).to_pylist()
    scored = pq.read_table(export(labelled, tmp_path, "all.parquet", "--suspicion")).to_pylist()
    judged = {r["id"]: r["suspicion"] for r in scored if r["suspicion"] is not None}
    # The audit judges the teacher labels no person has checked, and nothing else.
    assert set(judged) == set(labelled["teacher"]) - {labelled["corrected"]}
    assert [r["id"] for r in suspect] == sorted(d for d, s in judged.items() if s >= 0.5)


def test_the_dataset_card_says_what_is_in_it_and_grades_the_teacher(labelled: dict, tmp_path: Path):
    out = export(labelled, tmp_path, "labels.parquet")
    card = (tmp_path / "labels.card.md").read_text("utf-8")
    rows = pq.read_table(out).num_rows
    assert card.startswith("---\ntask_categories:\n- text-classification\n") and '"labels.parquet"' in card
    assert f"{rows} documents exported" in card and "| label | documents | human | teacher | gold |" in card
    # The teacher against gold, the documents it labelled: its own answers, interval and all.
    gold = labelled["gold"]
    right = sum(gold[d] == label for d, label in labelled["teacher"].items() if d in gold)
    checked = sum(d in gold for d in labelled["teacher"])
    assert f"against gold: accuracy {right / checked:.3f}" in card and f"on {checked} documents" in card
    assert "not a random sample" in card  # the person's correction: chosen, not drawn
    assert "\x1b" not in card


@pytest.mark.parametrize(("args", "said"), [
    (["--out", "{dir}/labels.xlsx"], "cannot tell the format from its extension"),
    (["--out", "{dir}/missing/labels.csv"], "there is no folder"),
    (["--out", "{dir}/labels.csv", "--run", "99"], "there is no run 99"),
    (["--out", "{dir}/labels.csv", "--run", "1", "--source", "gold"], "no labelled document matches"),
])
def test_a_refused_export_says_why_in_one_line_and_leaves_the_file_as_it_was(labelled: dict, tmp_path: Path,
                                                                           args: list[str], said: str):
    before = "what was there\n"
    for name in ("labels.xlsx", "labels.csv"):
        (tmp_path / name).write_text(before)
    result = cli("labels", "export", "-p", str(labelled["project"]), *[a.format(dir=tmp_path) for a in args])
    assert result.returncode != 0 and result.exception is None
    assert said in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "labels.csv").read_text() == before and not (tmp_path / "labels.card.md").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_write_that_fails_midway_leaves_the_old_file(labelled: dict, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    from kdstudio.store import labelled as labelled_module

    out = tmp_path / "labels.parquet"
    out.write_bytes(b"the old export")
    whole = labelled_module.labelled_batches

    def failing(store, where, batch_rows=65536):
        for number, batch in enumerate(whole(store, where, batch_rows=8)):
            if number == 2:
                raise OSError("disk full")
            yield batch

    monkeypatch.setattr(labelled_module, "labelled_batches", failing)
    with Project.open(fresh_copy(labelled["project"], tmp_path / "copy")) as project, \
            pytest.raises(OSError, match="disk full"):
        project.export_labels(out, LabelFilter())
    assert out.read_bytes() == b"the old export" and not list(tmp_path.glob(".*partial"))
