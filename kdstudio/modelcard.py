"""The model card written beside an exported classifier (README.md): what it was trained on, by which teacher, at
what cost, how well it does, and where to set the deferral threshold."""

from __future__ import annotations

import re
from typing import Any

from kdstudio.money import usd


def _md(text: object) -> str:
    """Data (labels, names, paths) as literal Markdown text: every character Markdown could read as syntax is escaped,
    so that a label like `x|y` or `*urgent*` neither breaks a table nor turns into emphasis."""
    return re.sub(r"([\\`*_{}\[\]<>()#+!|~])", r"\\\1", str(text)).replace("\n", " ")


def _code(text: object) -> str:
    """Data as an inline code span, with a fence longer than any backtick run inside it."""
    text = str(text).replace("\n", " ")
    fence = "`" * (1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_card(f: dict[str, Any]) -> str:
    student = f["student"]
    run = f.get("run") or {}
    model = f["model"]
    lines = [
        f"# {_md(f['project'])}: {_md(student['kind'])} classifier, ONNX {model.get('precision', 'fp32')}",
        "",
        f"Exported by kdstudio {f['version']} on {f['date']} from student {student['id']} (run {student['run_id']}, "
        f"round {student['round']}).",
        "",
        "## Labels",
        "",
        ", ".join(_code(x) for x in f["labels"]),
        "",
        "## Data",
        "",
        "| split | source | documents |",
        "| --- | --- | --- |",
        *[f"| {split} | {_md(source)} | {n} |" for split, source, n in f.get("documents", [])],
        "",
        f"Imported from: {', '.join(_md(x) for x in f.get('sources', [])) or 'unknown'}.",
        "",
        "## Teacher and cost",
        "",
    ]
    if run.get("simulated"):
        lines += ["**SIMULATED TEACHER**: the labels came from the corpus' gold labels, not from an LLM.", ""]
    lines += [
        f"- teacher: {_md(f.get('teacher', '?'))}",
        f"- labels bought: {run.get('n_train', '?')} training documents ({run.get('n_selected', '?')} sent to the "
        f"teacher; {run.get('human_labels', 0)} labels by people among them), plus {run.get('n_val', 0)} "
        f"validation documents labelled once; {run.get('generated', 0)} samples generated (PGKD)",
        f"- teacher calls: {run.get('calls', 0)}, cost {usd(run.get('usd', 0.0))}",
        *([f"- the teacher's accuracy against the corpus' gold labels, where it had them: "
           f"{run['teacher_accuracy']:.3f}"] if run.get("teacher_accuracy") is not None else []),
        f"- selector {run.get('selector', '?')}, student {student['kind']} {run.get('student_options') or ''}".rstrip(),
        "",
        "## Metrics",
        "",
    ]
    parity = f.get("parity")
    metrics = student.get("metrics", {})
    lines += ["| | accuracy | macro F1 |", "| --- | --- | --- |"]
    for split in ("val", "test"):
        if split in metrics:
            reference = "teacher labels" if split == "val" else "gold labels"
            lines.append(f"| in-process student, {split} ({reference}) | {_pct(metrics[split].get('accuracy'))} | "
                         f"{_pct(metrics[split].get('macro_f1'))} |")
    if parity is not None and parity.exported_accuracy is not None:
        lines.append(f"| this model, test (gold labels, {parity.n} documents) | {_pct(parity.exported_accuracy)} | "
                     f"{_pct(parity.exported_macro_f1)} |")
        lines += ["", "| label | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {_md(x)} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
                  for x, m in parity.per_class.items()]
    lines += ["", "## Parity with the in-process student", ""]
    if parity is None:
        lines.append("No test documents: parity was not measured.")
    else:
        lines.append(f"On {parity.n} test documents this model and the in-process student choose the same label for "
                     f"{parity.agreement:.1%}; the largest difference in a probability is {parity.max_prob_diff:.2e}.")
        if model.get("precision") == "int8":
            lines.append("The encoder's weights are int8 here, so small differences are expected: compare the "
                         "accuracies above.")
    cascade = f.get("cascade") or []
    lines += ["", "## Deferral", ""]
    if cascade:
        lines += ["Predictions below a confidence threshold can go to the LLM instead "
                  "(`kdstudio predict --defer-below T`). On the test split:", "",
                  "| threshold | answered here | accuracy on those |", "| --- | --- | --- |"]
        lines += [f"| {p.threshold:.2f} | {p.coverage:.1%} | {_pct(p.accuracy)} |" for p in cascade]
    else:
        lines.append("No gold test labels: the coverage / accuracy curve was not measured.")
    lines += [
        "", "## Model", "",
        *[f"- {key}: {value}" for key, value in model.items()],
        "", "## Use", "",
        "```python",
        "from kdstudio.runtime import Classifier",
        "classifier = Classifier(\"this-folder\")      # onnxruntime and tokenizers only",
        "classifier.predict([\"some text\"], defer_below=0.8)",
        "```",
        "",
        "```bash",
        "kdstudio predict this-folder input.csv --out predictions.jsonl --defer-below 0.8",
        "```",
        "",
    ]
    return "\n".join(lines)
