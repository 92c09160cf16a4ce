"""The model card written beside an exported classifier (README.md): what it was trained on, by which teacher, at
what cost, how well it does, and where to set the deferral threshold."""

from __future__ import annotations

import json
from typing import Any

from kdstudio.check import TOO_NARROW
from kdstudio.markdown import md_code as _code
from kdstudio.markdown import md_text as _md
from kdstudio.money import usd


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"

BASE_MODELS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}  # encoders published on the Hub
TAGS = ("kdstudio", "knowledge-distillation", "onnx", "text-classification")
TRUTHS = {"people": "people's labels", "gold": "gold labels", "people and gold": "people's and gold labels"}
FEW = 20  # a class with fewer training labels than this is named among the limitations


def render_card(f: dict[str, Any]) -> str:
    return "\n".join([*front_matter(f), *heading(f), *intended_use(f), *training_data(f), *teacher_and_cost(f),
                      *metrics(f), *parity_lines(f), *deferral(f), *limitations(f), *model_and_use(f)])


def front_matter(f: dict[str, Any]) -> list[str]:
    parity = f.get("parity")
    return hf_metadata(str(f["project"]), f.get("card", {}), BASE_MODELS.get(str(f["model"].get("encoder"))),
                       parity.exported_accuracy if parity is not None else None,
                       parity.exported_macro_f1 if parity is not None else None)


def hf_metadata(project: str, card: dict[str, Any], base_model: str | None, accuracy: float | None,
                macro_f1: float | None, tags: tuple[str, ...] = TAGS) -> list[str]:
    """Hugging Face model-card metadata (YAML) for a model of `project` measured on its test split. Every string is
    written as a JSON string, which YAML reads back as the same string whatever it holds."""
    q = json.dumps
    lines = ["---", f"license: {q(card.get('license') or 'other')}"]
    if card.get("language"):
        lines += ["language:", *[f"- {q(x)}" for x in card["language"]]]
    lines += ["library_name: onnx", "pipeline_tag: text-classification", "tags:", *[f"- {q(t)}" for t in tags],
              "metrics:", "- accuracy", "- f1"]
    if base_model:
        lines.append(f"base_model: {q(base_model)}")
    if accuracy is not None:
        lines += ["model-index:", f"- name: {q(project)}", "  results:", "  - task:", "      type: text-classification",
                  "    dataset:", f"      name: {q(project + ' test split')}", f"      type: {q(project)}",
                  "    metrics:", "    - type: accuracy", f"      value: {accuracy:.4f}"]
        if macro_f1 is not None:
            lines += ["    - type: f1", "      name: macro F1", f"      value: {macro_f1:.4f}"]
    return [*lines, "---", ""]


def heading(f: dict[str, Any]) -> list[str]:
    student, model = f["student"], f["model"]
    return [f"# {_md(f['project'])}: {_md(student['kind'])} classifier, ONNX {model.get('precision', 'fp32')}", "",
            f"Exported by kdstudio {f['version']} on {f['date']} from student {student['id']} (run "
            f"{student['run_id']}, round {student['round']}).", "",
            "## Labels", "", ", ".join(_code(x) for x in f["labels"]), ""]


def intended_use(f: dict[str, Any]) -> list[str]:
    card = f.get("card", {})
    language = ", ".join(_md(x) for x in card.get("language") or []) or "the corpus' language (not stated)"
    return ["## Intended use", "",
            f"Sorting text in {language} like the documents of project {_md(f['project'])} into the "
            f"{len(f['labels'])} labels above, at a small model's cost, in place of the teacher it was distilled from. "
            "It always answers one of these labels: route what it is unsure of to the teacher or to a person with "
            "`--defer-below` (see Deferral).", "",
            "Not meant for: labels outside this set, text unlike the training documents (another domain, language "
            "or length), or decisions about people without a person reviewing them.", "",
            "## Licence", "",
            f"{_md(card['license'])}." if card.get("license") else
            "Not stated by the exporter (the metadata says `other`): set it with `kdstudio export --license "
            "SPDX-ID`. The encoder's own licence applies to its weights (all-MiniLM-L6-v2: Apache-2.0).", ""]


def training_data(f: dict[str, Any]) -> list[str]:
    student, run = f["student"], f.get("run") or {}
    trained = student.get("metrics", {}).get("trained_on") or {}
    lines = ["## Data", "", "| split | source | documents |", "| --- | --- | --- |",
             *[f"| {split} | {_md(source)} | {n} |" for split, source, n in f.get("documents", [])], "",
             f"Imported from: {', '.join(_md(x) for x in f.get('sources', [])) or 'unknown'}.", ""]
    by_label, by_source = trained.get("by_label"), trained.get("by_source") or {}
    if by_label:
        total = sum(by_label.values())
        lines += ["### Labels the student trained on", "",
                  f"{total} labels: {by_source.get('teacher', 0)} from the teacher, {by_source.get('human', 0)} "
                  f"from people, {by_source.get('generated', 0)} generated by the teacher (PGKD).", "",
                  "| label | training labels | share |", "| --- | --- | --- |",
                  *[f"| {_md(x)} | {by_label.get(x, 0)} | {by_label.get(x, 0) / total:.1%} |" for x in f["labels"]],
                  ""]
    else:  # a student kept before kdstudio recorded what it trained on
        lines += [f"The student trained on {run.get('n_train', '?')} labels; their distribution was not recorded.", ""]
    auto = student.get("metrics", {}).get("auto")
    if auto:
        measure = "agreement with the teacher" if auto["truth"] == "teacher" else "accuracy"
        lines += [f"How it trained was chosen by the data (`method = auto`): {_md(auto['name'])}, the recipe with the "
                  f"best {measure} ({auto['accuracy']:.3f}) on {auto['n']} documents' "
                  f"{TRUTHS.get(auto['truth'], 'teacher labels')}, never trained on.", ""]
    return lines


def teacher_and_cost(f: dict[str, Any]) -> list[str]:
    run = f.get("run") or {}
    lines = ["## Teacher and cost", ""]
    if run.get("simulated"):
        lines += ["**SIMULATED TEACHER**: the labels came from the corpus' gold labels, not from an LLM.", ""]
    return [*lines,
        f"- teacher: {_md(f.get('teacher', '?'))}",
        f"- labels: {run.get('n_selected', '?')} training documents sent to the teacher, "
        f"{run.get('n_val', 0)} validation documents labelled once, {run.get('generated', 0)} samples generated "
        "(PGKD)",
        f"- teacher calls paid: {run.get('calls', 0)}, {usd(run.get('usd', 0.0))}; labels reused from earlier calls "
        f"(the ledger) at no cost: {run.get('reused', 0)}",
        *([f"- the teacher's accuracy against the corpus' gold labels, where it had them: "
           f"{run['teacher_accuracy']:.3f}"] if run.get("teacher_accuracy") is not None else []),
        f"- selector {run.get('selector', '?')}, student {f['student']['kind']} "
        f"{run.get('student_options') or ''}".rstrip(), ""]


def metrics(f: dict[str, Any]) -> list[str]:
    parity, kept = f.get("parity"), f["student"].get("metrics", {})
    lines = ["## Metrics", "", "| | accuracy | macro F1 |", "| --- | --- | --- |"]
    if "val" in kept:  # agreement with the teacher it copies: said as such, never as accuracy
        lines.append(f"| in-process student, val: agreement with the teacher's labels (not accuracy) | "
                     f"{_pct(kept['val'].get('accuracy'))} | {_pct(kept['val'].get('macro_f1'))} |")
    if "test" in kept:
        lines.append(f"| in-process student, test (gold labels) | {_pct(kept['test'].get('accuracy'))} | "
                     f"{_pct(kept['test'].get('macro_f1'))} |")
    check, caveat = kept.get("check"), ""
    if check:
        a, f1 = check["student_accuracy"], check["student_macro_f1"]
        lines.append(f"| in-process student, check sample ({TRUTHS.get(check['truth'], check['truth'])}, "
                     f"{check['n']} documents drawn at random, 95% intervals) | "
                     f"{_pct(a['value'])} [{_pct(a['low'])}, {_pct(a['high'])}] | "
                     f"{_pct(f1['value'])} [{_pct(f1['low'])}, {_pct(f1['high'])}] |")
        if TOO_NARROW in f1["method"]:
            caveat = f"Macro F1 on the check sample: {_md(f1['method'])}."
    if parity is not None and parity.exported_accuracy is not None:
        lines.append(f"| this model, test (gold labels, {parity.n} documents) | {_pct(parity.exported_accuracy)} | "
                     f"{_pct(parity.exported_macro_f1)} |")
        lines += ["", "| label | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {_md(x)} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
                  for x, m in parity.per_class.items()]
    return [*lines, "", *([caveat, ""] if caveat else [])]


def parity_lines(f: dict[str, Any]) -> list[str]:
    parity = f.get("parity")
    lines = ["## Parity with the in-process student", ""]
    if parity is None:
        return [*lines, "No test documents: parity was not measured.", ""]
    lines.append(f"On {parity.n} test documents this model and the in-process student choose the same label for "
                 f"{parity.agreement:.1%}; the largest difference in a probability is {parity.max_prob_diff:.2e}.")
    if f["model"].get("precision") == "int8":
        lines.append("The encoder's weights are int8 here, so small differences are expected: compare the "
                     "accuracies above.")
    return [*lines, ""]


def deferral(f: dict[str, Any]) -> list[str]:
    cascade = f.get("cascade") or []
    if not cascade:
        return ["## Deferral", "", "No gold test labels: the coverage / accuracy curve was not measured.", ""]
    return ["## Deferral", "", "Predictions below a confidence threshold can go to the LLM instead "
            "(`kdstudio predict --defer-below T`). On the test split:", "",
            "| threshold | answered here | accuracy on those |", "| --- | --- | --- |",
            *[f"| {p.threshold:.2f} | {p.coverage:.1%} | {_pct(p.accuracy)} |" for p in cascade], ""]


def limitations(f: dict[str, Any]) -> list[str]:
    run, model, parity = f.get("run") or {}, f["model"], f.get("parity")
    by_label = f["student"].get("metrics", {}).get("trained_on", {}).get("by_label") or {}
    items = []
    if run.get("simulated"):
        items.append("The teacher was simulated from gold labels: this says nothing of how a real LLM teacher would "
                     "have done.")
    elif run.get("teacher_accuracy") is not None:
        items.append(f"It learned from a teacher that was right on {run['teacher_accuracy']:.1%} of the labels it "
                     "sold where gold labels could tell; the student inherits the teacher's mistakes and biases.")
    else:
        items.append("It learned from the teacher's labels, whose accuracy no gold label measured; the student "
                     "inherits the teacher's mistakes and biases (`kdstudio audit` ranks the labels most likely "
                     "wrong).")
    few = [x for x in f["labels"] if by_label and by_label.get(x, 0) < FEW]
    if few:
        items.append("Few training labels for " + ", ".join(f"{_md(x)} ({by_label.get(x, 0)})" for x in few) +
                     ": expect more mistakes there.")
    if model.get("max_tokens"):
        items.append(f"Only the first {model['max_tokens']} tokens of a text are read; the rest is ignored.")
    if parity is not None:
        items.append(f"The accuracy above was measured on {parity.n} documents of the project's own test split; on "
                     "other data it will differ.")
    check = f["student"].get("metrics", {}).get("check")
    if check:
        items.append(f"Its accuracy on the project's own data was estimated on {check['n']} documents drawn at random "
                     f"with {TRUTHS.get(check['truth'], check['truth'])} (the check sample), never trained on: read "
                     "the interval, not just the figure.")
    elif parity is None:
        items.append("No gold labels and no check sample measured it: its accuracy is unknown, and the validation "
                     "figure is agreement with the teacher it copies. `kdstudio check` estimates the accuracy from "
                     "a few labels people give.")
    return ["## Limitations", "", *[f"- {item}" for item in items], ""]


def model_and_use(f: dict[str, Any]) -> list[str]:
    return ["## Model", "", *[f"- {key}: {value}" for key, value in f["model"].items()],
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
            ""]
