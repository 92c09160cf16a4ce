"""Reading documents to classify and writing predictions, for `kdstudio predict`: CSV, TSV, JSONL, Parquet or
standard input (one document per line) in; CSV, JSONL or Parquet out, one row per input row, in order. Only
pyarrow is used: predicting must not pull in the training stack."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from kdstudio.errors import KdError
from kdstudio.runtime import Prediction

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


@dataclass
class Documents:
    texts: list[str]
    ids: list[Any] | None
    id_column: str | None


def _format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise KdError(f"{path}: cannot tell the format from the extension {path.suffix!r}",
                      f"use one of {', '.join(FORMATS)}, or - for one document per line on standard input")
    return fmt


def _read_table(path: Path) -> pa.Table:
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as papq

    fmt = _format(path)
    if path.is_dir():
        raise KdError(f"{path} is a folder, not a {fmt} file", "give the file itself")
    if not path.is_file():
        raise KdError(f"{path} does not exist")
    # One block holds at least the longest line: a row longer than pyarrow's 1 MB default ("straddling object")
    # reads like any other, as it does on import.
    block = max(1 << 20, min(path.stat().st_size + 1, 1 << 30))
    try:
        if fmt in ("csv", "tsv"):
            table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=block),
                                   parse_options=pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",",
                                                                    newlines_in_values=True))
        elif fmt == "jsonl":
            table = pajson.read_json(path, read_options=pajson.ReadOptions(block_size=block))
        else:
            table = papq.read_table(path)
        table.column_names  # noqa: B018 - a header that is not UTF-8 (UTF-16, say) fails here, not later
        return table
    except UnicodeDecodeError:
        raise KdError(f"{path} is not UTF-8 text (its header cannot be read)",
                      "convert it to UTF-8 (e.g. with iconv), or import it with --encoding") from None
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise KdError(f"{path} cannot be read as {fmt}: {str(exc).splitlines()[0]}",
                      "check the file (UTF-8 text for CSV, TSV and JSONL), or name its format by its extension") \
            from None


def _stdin_lines() -> list[tuple[int, str]]:
    """Standard input's non-blank lines, numbered, decoded as UTF-8 (strictly: a byte that is not UTF-8 is the
    user's to fix, never a replacement character or a surrogate passed on to the tokenizer)."""
    if sys.stdin is None or sys.stdin.closed:
        raise KdError("standard input is closed, so there is nothing to classify",
                      "pipe documents in, one per line (`... | kdstudio predict MODEL -`), or give a file")
    numbered = []
    for n, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise KdError(f"standard input line {n} is not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                          f"{exc.start + 1})", "convert the input to UTF-8, e.g. with iconv") from None
        if line.strip():
            numbered.append((n, line))
    return numbered


def read_documents(source: str, text_column: str = "text", id_column: str | None = None) -> Documents:
    if source == "-":
        # One document per non-blank line; each prediction carries its line number, so blank lines cost nothing
        # and the output still lines up with the input.
        numbered = _stdin_lines()
        if not numbered:
            raise KdError("standard input holds no text (no line that is not blank)", "pipe documents in, one per line")
        return Documents([text for _, text in numbered], [n for n, _ in numbered], "line")
    table = _read_table(Path(source))
    columns = table.column_names
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise KdError(f"{source}: the header names column(s) {', '.join(map(repr, twice))} more than once",
                      "give every column a distinct name")
    if text_column not in columns:
        raise KdError(f"{source} has no column {text_column!r} (it has: {', '.join(columns)})",
                      "name the text column with --text-column")
    if id_column is not None and id_column not in columns:
        raise KdError(f"{source} has no column {id_column!r} (it has: {', '.join(columns)})")
    kind = table.schema.field(text_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
        raise KdError(f"{source}: column {text_column!r} holds {kind} values, not text",
                      "name the column that holds the documents' text with --text-column")
    if not table.num_rows:
        raise KdError(f"{source} holds no rows to classify")
    texts = table.column(text_column).to_pylist()
    missing = [i + 1 for i, t in enumerate(texts) if t is None]
    if missing:
        raise KdError(f"{source}: rows {', '.join(map(str, missing[:10]))}{' ...' if len(missing) > 10 else ''} "
                      f"have no text in {text_column!r}", "fill or drop them: every input row gets an output row")
    id_column = id_column or ("id" if "id" in columns else None)
    ids = table.column(id_column).to_pylist() if id_column else None
    return Documents([str(t) for t in texts], ids, id_column)


def _rows(predictions: Sequence[Prediction], labels: list[str], docs: Documents, nested: bool
          ) -> list[dict[str, Any]]:
    rows = []
    for i, p in enumerate(predictions):
        # Every output row says which input row it answers: the line on standard input, the row of a file.
        row: dict[str, Any] = {} if docs.id_column == "line" else {"row": i + 1}
        if docs.ids is not None and docs.id_column:
            row[docs.id_column] = docs.ids[i]
        row.update(label=p.label, confidence=round(p.confidence, 6), predicted=p.predicted)
        if p.tier is not None:
            row["tier"] = p.tier
        if nested:
            row["probabilities"] = {x: round(p.probs[x], 6) for x in labels}
        else:
            row.update({f"p_{x}": round(p.probs[x], 6) for x in labels})
        rows.append(row)
    return rows


def write_predictions(predictions: Sequence[Prediction], labels: list[str], docs: Documents, out: Path | None
                      ) -> None:
    """JSONL when `out` ends in .jsonl, Parquet for .parquet, CSV otherwise; standard output without `out`."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as papq

    fmt = "csv" if out is None else _format(out)
    if fmt == "jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in _rows(predictions, labels, docs, True))
        out.write_text(text, encoding="utf-8")  # type: ignore[union-attr]
        return
    table = pa.Table.from_pylist(_rows(predictions, labels, docs, False)) if predictions else pa.table(
        {"label": pa.array([], pa.string())})
    if fmt == "parquet":
        papq.write_table(table, out)
    elif out is None:
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        sys.stdout.write(buffer.getvalue().decode("utf-8"))
    else:
        pacsv.write_csv(table, out, pacsv.WriteOptions(delimiter="\t" if fmt == "tsv" else ","))
