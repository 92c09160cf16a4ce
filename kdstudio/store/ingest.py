"""Importing documents: DuckDB reads the file itself, validates it in SQL, and writes it in one transaction.

Nothing here loops over rows in Python. A failed import raises ImportFailed and leaves the project exactly
as it was: every check runs on temporary tables before the single transaction that writes.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from kdstudio.errors import ImportFailed
from kdstudio.store.store import Store

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
CSV_ENCODINGS = ("utf-8", "latin-1", "utf-16")
SPLIT_ALIASES = {
    "pool": "pool", "train": "pool", "training": "pool", "unlabeled": "pool", "unlabelled": "pool",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}
ROW = "__kd_row"
MAX_LINE_BYTES = 64 * 1024 * 1024
SHOWN = 5


@dataclass
class ImportOptions:
    text_column: str = "text"
    id_column: str | None = None
    label_column: str | None = None
    split_column: str | None = None
    # Fractions carved out of the rows that land in the pool, stratified by gold label: {"val": .1, "test": .2}
    split: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    encoding: str = "utf-8"
    drop_empty: bool = False
    format: str | None = None


@dataclass
class ImportReport:
    source: str
    rows_read: int
    imported: int
    duplicates_dropped: int
    empty_dropped: int
    by_split: dict[str, int]
    gold_labelled: int

    def summary(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.by_split.items()) or "none"
        return (
            f"{self.source}: read {self.rows_read} rows, imported {self.imported} ({splits}); "
            f"dropped {self.duplicates_dropped} duplicates and {self.empty_dropped} empty; "
            f"{self.gold_labelled} with gold labels"
        )


def parse_split_option(text: str) -> dict[str, float]:
    """`val=0.1,test=0.2` -> {"val": 0.1, "test": 0.2}."""
    fractions: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in ("val", "test"):
            raise ImportFailed(f"--split: unknown split {name!r}", "use val=FRACTION and/or test=FRACTION")
        if name in fractions:
            raise ImportFailed(f"--split: {name} is given twice", "write it as val=0.1,test=0.2")
        try:
            fractions[name] = float(value)
        except ValueError:
            raise ImportFailed(f"--split: {part!r} has no number", "write it as val=0.1,test=0.2") from None
    if not all(0 <= f < 1 for f in fractions.values()) or sum(fractions.values()) >= 1:  # NaN fails the first
        raise ImportFailed(f"--split: fractions {fractions} must be >= 0 and sum below 1")
    return fractions


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _rows(rows: list[int], total: int | None = None) -> str:
    total = len(rows) if total is None else total
    shown = ", ".join(str(r) for r in rows[:SHOWN])
    more = f" and {total - SHOWN} more" if total > SHOWN else ""
    return f"row{'s' if total > 1 else ''} {shown}{more}"


def detect_format(path: Path, explicit: str | None) -> str:
    if explicit:
        if explicit not in set(FORMATS.values()):
            raise ImportFailed(f"unknown format {explicit!r}", "use csv, tsv, jsonl or parquet")
        return explicit
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImportFailed(
            f"{path}: cannot tell the format from the extension {path.suffix!r}",
            "rename it to .csv, .tsv, .jsonl or .parquet, or pass --format",
        )
    return fmt


def _first_bad_utf8(path: Path) -> tuple[int, int] | None:
    """(line, byte offset) of the first byte sequence that is not UTF-8, scanning in chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    lines = 1
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return lines + chunk.count(b"\n", 0, exc.start), offset + exc.start
            lines += chunk.count(b"\n")
            offset += len(chunk)
    return None


def _not_utf8(path: Path, fmt: str) -> ImportFailed:
    where = _first_bad_utf8(path)
    place = f"line {where[0]} (byte {where[1]})" if where else "somewhere"
    fix = "convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"
    if fmt in ("csv", "tsv"):
        fix += ", or pass --encoding latin-1"
    return ImportFailed(f"{path}: {place} is not valid UTF-8", fix)


def _read_header(path: Path, delimiter: str, encoding: str) -> list[str]:
    python_encoding = "utf-8-sig" if encoding == "utf-8" else encoding
    try:
        with path.open(encoding=python_encoding, newline="") as fh:
            header = next(csv.reader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else
                                     csv.QUOTE_MINIMAL), None)
    except UnicodeDecodeError:
        raise _not_utf8(path, "csv") from None
    if not header:
        raise ImportFailed(f"{path} is empty", "the first line must name the columns, e.g. id,text,label")
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise ImportFailed(f"{path}: the header names column(s) {duplicates} more than once",
                           "give every column a distinct name")
    return header


def _reader_sql(path: Path, fmt: str, options: ImportOptions) -> str:
    p = _lit(str(path))
    if fmt in ("csv", "tsv"):
        if options.encoding not in CSV_ENCODINGS:
            raise ImportFailed(f"--encoding {options.encoding!r} is not supported",
                               f"use one of {', '.join(CSV_ENCODINGS)}")
        delimiter = "\t" if fmt == "tsv" else ","
        header = _read_header(path, delimiter, options.encoding)
        columns = "{" + ", ".join(f"{_lit(c)}: 'VARCHAR'" for c in header) + "}"
        # TSV has no quoting convention: a quote character is text. CSV follows RFC 4180.
        quote = "quote='', escape=''" if fmt == "tsv" else "quote='\"', escape='\"'"
        return (
            f"read_csv({p}, header=true, delim={_lit(delimiter)}, {quote}, auto_detect=false, "
            f"strict_mode=true, columns={columns}, max_line_size={MAX_LINE_BYTES}, "
            f"encoding={_lit(options.encoding)})"
        )
    if fmt == "jsonl":
        return (f"read_json({p}, format='newline_delimited', records=true, sample_size=-1, "
                f"maximum_object_size={MAX_LINE_BYTES})")
    return f"read_parquet({p})"


def _reader_error(path: Path, fmt: str, exc: duckdb.Error) -> ImportFailed:
    text = str(exc)
    if re.search(r"unicode|utf-8|utf8", text, re.IGNORECASE):
        return _not_utf8(path, fmt)
    if fmt in ("csv", "tsv") and "state machine reached an invalid state" in text:
        return _mixed_newlines(path) or ImportFailed(f"{path} cannot be parsed as {fmt.upper()}",
                                                     "check quoting and line endings")
    if fmt in ("csv", "tsv"):
        line = re.search(r"CSV Error on Line: (\d+)", text)
        original = re.search(r"Original Line: (.*)", text)
        # DuckDB prints the offending line (which may span lines), then the reason, then "Possible fixes".
        lines = text.splitlines()
        start = next((i for i, ln in enumerate(lines) if ln.startswith("Original Line")), 0) + 1
        end = next((i for i, ln in enumerate(lines) if ln.startswith("Possible")), len(lines))
        reason = next((ln.strip() for ln in reversed(lines[start:end]) if ln.strip()), "").rstrip(".")
        if line:
            snippet = (original.group(1)[:120] if original else "").strip()
            return ImportFailed(
                f"{path}: line {line.group(1)} cannot be parsed: {reason} (line starts: {snippet!r})",
                "quote fields that contain the delimiter, quotes or newlines (double a quote inside a quoted "
                "field), and give every row as many fields as the header",
            )
    if fmt == "jsonl":
        return _jsonl_error(path, text)
    if fmt == "parquet":
        return ImportFailed(f"{path} is not a readable Parquet file ({text.splitlines()[0]})",
                            "check that the file is complete and really Parquet")
    return ImportFailed(f"{path}: {text.splitlines()[0]}")


def _jsonl_error(path: Path, duckdb_text: str) -> ImportFailed:
    """The first line that is not a JSON object, found by reading the file again: DuckDB's own message counts lines
    differently and quotes its internal SQL."""
    fix = "write one JSON object per line"
    with path.open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.rstrip("\r\n"))
            except ValueError as exc:
                return ImportFailed(f"{path}: line {number} is not valid JSON Lines ({exc.msg} at column {exc.colno}; "
                                    f"line starts: {line.strip()[:60]!r})", fix)
            if not isinstance(value, dict):
                return ImportFailed(f"{path}: line {number} is a JSON {type(value).__name__}, not an object", fix)
    reason = duckdb_text.splitlines()[0] if duckdb_text else "unreadable"
    return ImportFailed(f"{path} is not valid JSON Lines ({reason.split(':', 1)[-1].strip()})", fix)


def _mixed_newlines(path: Path) -> ImportFailed | None:
    """DuckDB's CSV reader fails without a line number on files that mix \\r\\n, \\n and \\r line ends."""
    data = path.read_bytes()
    styles = {"\\r\\n": data.count(b"\r\n")}
    styles["\\n"] = data.count(b"\n") - styles["\\r\\n"]
    styles["\\r"] = data.count(b"\r") - styles["\\r\\n"]
    used = {k: v for k, v in styles.items() if v}
    if len(used) < 2:
        return None
    found = ", ".join(f"{k} {v}" for k, v in used.items())
    return ImportFailed(f"{path} mixes line endings (lines ending in {found}), which the CSV reader cannot follow",
                        "convert every line end to one style, e.g. `dos2unix FILE` or `sed -i 's/\\r$//' FILE` "
                        "(for lone \\r: `tr '\\r' '\\n'`)")


class _Ingest:
    """One import: stage -> check -> write. Temporary tables live in memory, never in the project file."""

    def __init__(self, store: Store, source: str, labels: list[str], options: ImportOptions) -> None:
        self.store = store
        self.con = store.con
        self.source = source
        self.labels = labels
        self.options = options

    def run_from_sql(self, reader_sql: str, on_error) -> ImportReport:
        try:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE _kd_staging AS "
                             f"SELECT row_number() OVER () AS {ROW}, * FROM {reader_sql}")
        except duckdb.Error as exc:
            raise on_error(exc) from None
        return self._run()

    def run_from_arrow(self, table: pa.Table) -> ImportReport:
        self.con.register("_kd_arrow", table)
        try:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE _kd_staging AS "
                             f"SELECT row_number() OVER () AS {ROW}, * FROM _kd_arrow")
        finally:
            self.con.unregister("_kd_arrow")
        return self._run()

    def _run(self) -> ImportReport:
        try:
            self._check_columns()
            self._prepare()
            self._check_rows()
            return self._write()
        finally:
            for table in ("_kd_staging", "_kd_prepared", "_kd_final"):
                self.con.execute(f"DROP TABLE IF EXISTS temp.{table}")

    def _columns(self) -> list[str]:
        rows = self.con.execute("DESCRIBE temp._kd_staging").fetchall()
        return [r[0] for r in rows if r[0] != ROW]

    def _check_columns(self) -> None:
        columns = self._columns()
        o = self.options
        wanted = {"--text-column": o.text_column, "--id-column": o.id_column,
                  "--label-column": o.label_column, "--split-column": o.split_column}
        for flag, column in wanted.items():
            if column is not None and column not in columns:
                raise ImportFailed(
                    f"{self.source}: there is no column {column!r} (columns: {', '.join(columns) or 'none'})",
                    f"name the right column with {flag} NAME",
                )
        self._check_types(wanted)

    def _check_types(self, wanted: dict[str, str | None]) -> None:
        """Text must be text, and ids, labels and splits single values: a list, a struct or a number turned into a
        string would be imported as something nobody wrote."""
        types = {r[0]: r[1] for r in self.con.execute("DESCRIBE temp._kd_staging").fetchall()}
        for flag, column in wanted.items():
            if column is None:
                continue
            kind = types[column]
            nested = any(mark in kind for mark in ("[]", "STRUCT", "MAP", "UNION")) or kind == "JSON"
            if (flag == "--text-column" and kind != "VARCHAR") or nested:
                raise ImportFailed(f"{self.source}: column {column!r} holds {kind} values, not text",
                                   "store it as a string column, or name another column with " + flag)

    def _prepare(self) -> None:
        o = self.options
        text = f"CAST({_q(o.text_column)} AS VARCHAR)"
        given_id = f"nullif(trim(CAST({_q(o.id_column)} AS VARCHAR)), '')" if o.id_column else "NULL"
        gold = f"nullif(trim(CAST({_q(o.label_column)} AS VARCHAR)), '')" if o.label_column else "NULL"
        split = f"nullif(lower(trim(CAST({_q(o.split_column)} AS VARCHAR))), '')" if o.split_column else "NULL"
        used = {c for c in (o.text_column, o.id_column, o.label_column, o.split_column) if c}
        rest = [c for c in self._columns() if c not in used]
        meta = ("to_json(struct_pack(" + ", ".join(f"{_q(c)} := {_q(c)}" for c in rest) + "))") if rest else "NULL"
        self.con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _kd_prepared AS
            SELECT {ROW} AS row, {text} AS text, {given_id} AS given_id, {gold} AS gold, {split} AS given_split,
                   {meta} AS meta,
                   md5(regexp_replace(lower(trim({text})), '\\s+', ' ', 'g')) AS text_hash,
                   ({text} IS NULL OR trim({text}) = '') AS empty
            FROM temp._kd_staging
            """
        )

    def _fetch_rows(self, where: str, params: list | None = None) -> tuple[list[int], int]:
        rows = self.con.execute(f"SELECT row FROM temp._kd_prepared WHERE {where} ORDER BY row LIMIT {SHOWN}",
                                params or []).fetchall()
        total = self.con.execute(f"SELECT count(*) FROM temp._kd_prepared WHERE {where}",
                                 params or []).fetchall()[0][0]
        return [r[0] for r in rows], int(total)

    def _check_rows(self) -> None:
        o = self.options
        rows, total = self._fetch_rows("empty")
        if total and not o.drop_empty:
            raise ImportFailed(
                f"{self.source}: column {o.text_column!r} is empty or null in {_rows(rows, total)} "
                "(rows count from 1, after any header)",
                "fill in or delete those rows, or pass --drop-empty to skip them",
            )
        if o.id_column:
            rows, total = self._fetch_rows("given_id IS NULL AND NOT empty")
            if total:
                raise ImportFailed(f"{self.source}: column {o.id_column!r} is empty in {_rows(rows, total)}",
                                   "give every row an id, or import without --id-column to derive ids")
            dupes = self.con.execute(
                "SELECT given_id, list(row ORDER BY row) FROM temp._kd_prepared WHERE NOT empty "
                "GROUP BY 1 HAVING count(*) > 1 ORDER BY min(row) LIMIT 5"
            ).fetchall()
            if dupes:
                listed = "; ".join(f"{i!r} in {_rows(r)}" for i, r in dupes)
                raise ImportFailed(f"{self.source}: duplicate ids in column {o.id_column!r}: {listed}",
                                   "make the ids unique")
        if o.label_column:
            bad = self.con.execute(
                "SELECT gold, count(*), min(row) FROM temp._kd_prepared "
                "WHERE gold IS NOT NULL AND NOT empty AND gold NOT IN (SELECT unnest(?)) "
                "GROUP BY 1 ORDER BY 3 LIMIT 10",
                [self.labels],
            ).fetchall()
            if bad:
                listed = ", ".join(f"{label!r} ({n} rows, first at row {first})" for label, n, first in bad)
                raise ImportFailed(
                    f"{self.source}: column {o.label_column!r} holds labels outside the project's label set "
                    f"[{', '.join(self.labels)}]: {listed}",
                    "add them to [[labels]] in kdstudio.toml, or map them to existing labels in the file",
                )
        if o.split_column:
            known = list(SPLIT_ALIASES)
            bad = self.con.execute(
                "SELECT given_split, min(row) FROM temp._kd_prepared "
                "WHERE given_split IS NOT NULL AND given_split NOT IN (SELECT unnest(?)) GROUP BY 1 LIMIT 5",
                [known],
            ).fetchall()
            if bad:
                listed = ", ".join(f"{s!r} (first at row {r})" for s, r in bad)
                raise ImportFailed(f"{self.source}: column {o.split_column!r} has unknown splits: {listed}",
                                   "use pool/train, val/validation/dev or test")

    def _write(self) -> ImportReport:
        o = self.options
        aliases = ", ".join(f"({_lit(k)}, {_lit(v)})" for k, v in SPLIT_ALIASES.items())
        doc_id = "coalesce(p.given_id, substr(p.text_hash, 1, 16))"
        test = float(o.split.get("test", 0.0))
        val = float(o.split.get("val", 0.0))
        self.con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _kd_final AS
            WITH kept AS (
                SELECT p.*, {doc_id} AS id, coalesce(a.split, 'pool') AS base_split
                FROM temp._kd_prepared p LEFT JOIN (VALUES {aliases}) a(alias, split) ON a.alias = p.given_split
                WHERE NOT p.empty
                QUALIFY row_number() OVER (PARTITION BY p.text_hash ORDER BY p.row) = 1
            ), fresh AS (
                SELECT * FROM kept k WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.text_hash = k.text_hash)
            ), ranked AS (
                -- Stratified by gold label, in an order fixed by the seed: the same seed gives the same split.
                SELECT *, row_number() OVER (stratum ORDER BY md5(id || ':' || {int(o.seed)}), id) - 1 AS rank,
                          round(count(*) OVER stratum * {test}) AS n_test,
                          round(count(*) OVER stratum * {val}) AS n_val
                FROM fresh
                WINDOW stratum AS (PARTITION BY base_split, coalesce(gold, ''))
            )
            SELECT row, id, text, text_hash, gold, meta,
                   CASE WHEN base_split <> 'pool' THEN base_split
                        WHEN rank < n_test THEN 'test' WHEN rank < n_test + n_val THEN 'val' ELSE 'pool' END AS split
            FROM ranked
            """
        )
        clash = self.con.execute(
            "SELECT f.id, f.row FROM temp._kd_final f JOIN documents d ON d.id = f.id ORDER BY f.row LIMIT 5"
        ).fetchall()
        if clash:
            listed = ", ".join(f"{i!r} (row {r})" for i, r in clash)
            raise ImportFailed(
                f"{self.source}: ids already used by different documents in the project: {listed}",
                "give these rows new ids, or import without --id-column to derive ids from the text",
            )
        rows_read, empty = self.con.execute(
            "SELECT count(*), count(*) FILTER (WHERE empty) FROM temp._kd_prepared").fetchall()[0]
        imported = int(self.con.execute("SELECT count(*) FROM temp._kd_final").fetchall()[0][0])
        with self.store.transaction() as con:
            import_id = con.execute(
                "INSERT INTO imports (source, rows_read, rows_imported, duplicates_dropped, empty_dropped) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                [self.source, rows_read, imported, rows_read - empty - imported, empty],
            ).fetchall()[0][0]
            con.execute(
                "INSERT INTO documents (id, text, text_hash, split, source, meta, import_id) "
                "SELECT id, text, text_hash, split, 'imported', meta, ? FROM temp._kd_final ORDER BY row",
                [import_id],
            )
            con.execute("INSERT INTO gold (doc_id, label) SELECT id, gold FROM temp._kd_final "
                        "WHERE gold IS NOT NULL")
        by_split = dict(self.con.execute(
            "SELECT split, count(*) FROM temp._kd_final GROUP BY 1 "
            "ORDER BY CASE split WHEN 'pool' THEN 0 WHEN 'val' THEN 1 ELSE 2 END").fetchall())
        gold = int(self.con.execute("SELECT count(gold) FROM temp._kd_final").fetchall()[0][0])
        return ImportReport(self.source, int(rows_read), imported, int(rows_read - empty - imported), int(empty),
                            by_split, gold)


def _check_readable(path: Path) -> None:
    if path.is_file():
        return
    if path.is_dir():
        raise ImportFailed(f"{path} is a folder, not a file", "give the path of a CSV, TSV, JSONL or Parquet file")
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:
            raise ImportFailed(f"{path} is a symbolic link that leads back to itself (a loop)",
                               "point the link at the real file, or give the file's own path") from None
        except OSError:
            pass
        raise ImportFailed(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist",
                           "point the link at the real file, or give the file's own path")
    raise ImportFailed(f"{path}: no such file")


def import_file(store: Store, path: Path, labels: list[str], options: ImportOptions) -> ImportReport:
    _check_readable(path)
    fmt = detect_format(path, options.format)
    reader = _reader_sql(path, fmt, options)
    return _Ingest(store, str(path), labels, options).run_from_sql(reader, lambda e: _reader_error(path, fmt, e))


def import_table(store: Store, table: pa.Table, source: str, labels: list[str],
                 options: ImportOptions) -> ImportReport:
    return _Ingest(store, source, labels, options).run_from_arrow(table)
