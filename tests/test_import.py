from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli, write

from kdstudio.errors import ImportFailed
from kdstudio.project import Project
from kdstudio.store import ImportOptions, parse_split_option

ROWS = [
    {"id": "r1", "text": "The home side won the cup final", "label": "sports", "lang": "en"},
    {"id": "r2", "text": "Parliament passed the budget", "label": "politics", "lang": "en"},
    {"id": "r3", "text": "A new phone chip doubles battery life", "label": "tech", "lang": "en"},
    {"id": "r4", "text": "Striker signs a three-year deal", "label": "sports", "lang": "en"},
    {"id": "r5", "text": "The minister resigned on Friday", "label": "politics", "lang": "en"},
    {"id": "r6", "text": "  the HOME side   won the cup final ", "label": "sports", "lang": "en"},  # dup of r1
]


def write_rows(path: Path, rows: list[dict], fmt: str) -> Path:
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        lines = [sep.join(rows[0])] + [sep.join(str(v) for v in row.values()) for row in rows]
        return write(path, "\n".join(lines) + "\n")
    if fmt == "jsonl":
        return write(path, "".join(json.dumps(row) + "\n" for row in rows))
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_each_format_imports_with_gold_ids_meta_and_dedupe(project: Project, tmp_path: Path, fmt: str):
    path = write_rows(tmp_path / f"docs.{fmt}", ROWS, fmt)
    report = project.import_file(path, ImportOptions(id_column="id", label_column="label"))
    assert (report.rows_read, report.imported, report.duplicates_dropped) == (6, 5, 1)
    con = project.store.con
    assert con.execute("SELECT id FROM documents ORDER BY id").fetchall() == [(f"r{i}",) for i in range(1, 6)]
    assert con.execute("SELECT label FROM gold WHERE doc_id = 'r2'").fetchall() == [("politics",)]
    assert json.loads(con.execute("SELECT meta FROM documents WHERE id = 'r1'").fetchall()[0][0]) == {"lang": "en"}
    assert con.execute("SELECT rows_imported, duplicates_dropped FROM imports").fetchall() == [(5, 1)]
    again = project.import_file(path, ImportOptions(id_column="id", label_column="label"))
    assert (again.imported, again.duplicates_dropped) == (0, 6)  # re-importing is harmless


def test_ids_are_derived_from_text_when_the_file_has_none(project: Project, tmp_path: Path):
    path = write(tmp_path / "d.csv", "text\nhello world\nsecond doc\n")
    project.import_file(path)
    ids = [r[0] for r in project.store.con.execute("SELECT id FROM documents").fetchall()]
    assert len(ids) == 2 and all(len(i) == 16 for i in ids)


def test_split_fractions_are_stratified_and_seeded(project: Project, tmp_path: Path):
    rows = [{"id": f"d{i}", "text": f"document number {i}", "label": ["sports", "politics", "tech"][i % 3]}
            for i in range(300)]
    path = write_rows(tmp_path / "d.parquet", rows, "parquet")
    project.import_file(path, ImportOptions(id_column="id", label_column="label", split=parse_split_option(
        "val=0.1,test=0.2"), seed=7))
    counts = project.store.con.execute(
        "SELECT g.label, d.split, count(*) FROM documents d JOIN gold g ON g.doc_id = d.id GROUP BY ALL"
    ).fetchall()
    for label in ("sports", "politics", "tech"):
        by_split = {s: n for lab, s, n in counts if lab == label}
        assert by_split == {"pool": 70, "val": 10, "test": 20}
    first = project.store.con.execute("SELECT id, split FROM documents ORDER BY id").fetchall()
    project.store.con.execute("DELETE FROM gold; DELETE FROM documents; DELETE FROM imports")
    project.import_file(path, ImportOptions(id_column="id", label_column="label", split={"val": .1, "test": .2},
                                            seed=7))
    assert project.store.con.execute("SELECT id, split FROM documents ORDER BY id").fetchall() == first


def test_split_column_is_kept_and_val_is_carved_from_train(project: Project, tmp_path: Path):
    rows = [{"text": f"doc {i}", "part": "test" if i < 10 else "train"} for i in range(50)]
    path = write_rows(tmp_path / "d.jsonl", rows, "jsonl")
    project.import_file(path, ImportOptions(split_column="part", split={"val": 0.2}))
    assert dict(project.store.con.execute("SELECT split, count(*) FROM documents GROUP BY 1").fetchall()) == {
        "test": 10, "val": 8, "pool": 32}


def test_split_option_is_validated():
    with pytest.raises(ImportFailed, match="unknown split"):
        parse_split_option("train=0.5")
    with pytest.raises(ImportFailed, match="sum below 1"):
        parse_split_option("val=0.5,test=0.5")


# -- bad input: a clear error naming the file, the row or column and the fix; the project is unchanged -------

GOOD = "id,text,label\n1,first document,sports\n2,second document,tech\n"
BAD_CASES = {
    "missing text column": ("d.csv", "id,body\n1,hello\n", {}, ["no column 'text'", "columns: id, body",
                                                                  "--text-column"]),
    "missing label column": ("d.csv", GOOD, {"label_column": "category"}, ["no column 'category'",
                                                                           "--label-column"]),
    "non-utf8 csv": ("d.csv", b"id,text\n1,fine\n2,caf\xe9 au lait\n", {}, ["line 3", "not valid UTF-8",
                                                                           "--encoding latin-1"]),
    "non-utf8 jsonl": ("d.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', {}, ["line 2", "not valid UTF-8"]),
    "empty text": ("d.csv", "id,text\n1,fine\n2,\n3,   \n", {}, ["empty or null in rows 2, 3", "--drop-empty"]),
    "null text jsonl": ("d.jsonl", '{"text": "a"}\n{"text": null}\n', {}, ["empty or null in row 2"]),
    "duplicate ids": ("d.csv", "id,text\n1,a\n2,b\n1,c\n", {"id_column": "id"}, ["duplicate ids", "'1' in rows 1, 3",
                                                                                "unique"]),
    "label outside set": ("d.csv", "text,label\na,sports\nb,cooking\nc,cooking\n", {"label_column": "label"},
                          ["'cooking' (2 rows, first at row 2)", "kdstudio.toml"]),
    "unterminated quote": ("d.csv", 'id,text\n1,fine\n2,"broken, row\n3,ok\n', {}, ["line 3", "unterminated quote",
                                                                                   "quote fields"]),
    "extra column": ("d.csv", "id,text\n1,fine\n2,one,two\n", {}, ["line 3", "Expected Number of Columns: 2"]),
    "malformed jsonl": ("d.jsonl", '{"text": "a"}\n{"text": "b"\n', {}, ["not valid JSON Lines",
                                                                         "one JSON object per line"]),
    "not parquet": ("d.parquet", "id,text\n1,a\n", {}, ["not a readable Parquet file"]),
    "unknown split": ("d.csv", "text,part\na,train\nb,holdout\n", {"split_column": "part"},
                      ["'holdout' (first at row 2)", "pool/train"]),
    "unknown extension": ("d.xlsx", "whatever", {}, ["cannot tell the format", "--format"]),
    "empty file": ("d.csv", "", {}, ["is empty"]),
    "blank id": ("d.csv", "id,text\n1,a\n,b\n", {"id_column": "id"}, ["'id' is empty in row 2"]),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_rejected_and_changes_nothing(project: Project, tmp_path: Path, case: str):
    project.import_file(write(tmp_path / "seed.csv", "id,text,label\ns1,already here,sports\n"),
                        ImportOptions(id_column="id", label_column="label"))
    before = project.store.dump()
    name, content, options, expected = BAD_CASES[case]
    path = write(tmp_path / name, content)
    with pytest.raises(ImportFailed) as info:
        project.import_file(path, ImportOptions(**options))
    message = str(info.value)
    for piece in expected:
        assert piece in message, f"{piece!r} not in {message!r}"
    assert name in message or "--split" in message
    assert project.store.dump() == before


def test_id_clash_with_a_different_document_in_the_project(project: Project, tmp_path: Path):
    project.import_file(write(tmp_path / "a.csv", "id,text\nx1,original text\n"), ImportOptions(id_column="id"))
    before = project.store.dump()
    with pytest.raises(ImportFailed, match="'x1' \\(row 2\\)"):
        project.import_file(write(tmp_path / "b.csv", "id,text\nn1,new\nx1,different text\n"),
                            ImportOptions(id_column="id"))
    assert project.store.dump() == before


def test_latin1_csv_imports_with_the_encoding_option(project: Project, tmp_path: Path):
    path = write(tmp_path / "d.csv", b"text\ncaf\xe9 au lait\n")
    project.import_file(path, ImportOptions(encoding="latin-1"))
    assert project.store.con.execute("SELECT text FROM documents").fetchall() == [("café au lait",)]


def test_drop_empty_skips_and_reports_empty_rows(project: Project, tmp_path: Path):
    report = project.import_file(write(tmp_path / "d.csv", "text\na\n\nb\n\"\"\n"), ImportOptions(drop_empty=True))
    assert (report.rows_read, report.imported, report.empty_dropped) == (4, 2, 2)


def test_a_failure_inside_the_write_transaction_rolls_everything_back(project: Project, tmp_path: Path):
    before = project.store.dump()

    class FailingGoldInsert:
        def __init__(self, con):
            self._con = con

        def execute(self, sql, *args):
            if sql.startswith("INSERT INTO gold"):
                raise RuntimeError("disk full, say")
            return self._con.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._con, name)

    real = project.store.con
    project.store.con = FailingGoldInsert(real)
    try:
        with pytest.raises(RuntimeError, match="disk full"):
            project.import_file(write(tmp_path / "d.csv", GOOD), ImportOptions(id_column="id", label_column="label"))
    finally:
        project.store.con = real
    assert project.store.dump() == before


def test_cli_prints_the_broken_row_and_changes_nothing(tmp_path: Path):
    assert run_cli("init", str(tmp_path / "p"), "--labels", "sports,tech").returncode == 0
    good = write(tmp_path / "good.csv", GOOD)
    assert run_cli("import", str(good), "-p", str(tmp_path / "p"), "--label-column", "label").returncode == 0
    before = (tmp_path / "p" / "kdstudio.duckdb").read_bytes()
    broken = write(tmp_path / "broken.csv", 'id,text\n10,fine\n11,"broken, row\n12,ok\n')
    result = run_cli("import", str(broken), "-p", str(tmp_path / "p"))
    assert result.returncode == 1
    assert "broken.csv: line 3 cannot be parsed" in result.stderr
    assert "Fix:" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "p" / "kdstudio.duckdb").read_bytes() == before
