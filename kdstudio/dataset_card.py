"""The dataset card written beside exported labels (`kdstudio labels export`): Hugging Face metadata, what the labels
are and who gave them, and how the teacher did against each truth there is, with its interval."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from kdstudio import __version__
from kdstudio.labels_export import Written
from kdstudio.markdown import md_code, md_text

SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"))
WHO = {"human": "people", "teacher": "the teacher (an LLM or a simulated one)", "gold": "the corpus's own gold labels"}
TRUTH_NOTES = {
    "people, check sample": "a random sample people labelled blind: an unbiased estimate",
    "gold": "the corpus's own labels",
    "people, reviewed": "labels people reviewed, chosen because they looked doubtful: not a random sample, so this "
                        "understates the teacher",
}


def size_category(rows: int) -> str:
    return next((name for bound, name in SIZES if rows < bound), "n>10M")


def front_matter(written: Written) -> list[str]:
    q = json.dumps
    return ["---", "task_categories:", "- text-classification", "size_categories:",
            f"- {q(size_category(written.rows))}", "tags:", "- kdstudio", "- knowledge-distillation", "configs:",
            "- config_name: default",
            f"  data_files: {q(written.path.name)}", "---", ""]


def label_table(written: Written) -> list[str]:
    sources = [s for s in ("human", "teacher", "gold") if written.by_source[s]]
    lines = ["| label | documents | " + " | ".join(sources) + " |", "|---|---:|" + "---:|" * len(sources)]
    for label, count in sorted(written.by_label.items(), key=lambda item: (-item[1], item[0])):
        cells = " | ".join(str(written.by_label_source[label, s]) for s in sources)
        lines.append(f"| {md_code(label)} | {count} | {cells} |")
    return lines


def teacher_lines(written: Written) -> list[str]:
    if not written.teacher:
        return ["No truth to grade the teacher against: no person has labelled a document it labelled, and the corpus "
                "has no gold labels. `kdstudio check` draws a random sample for people to label."]
    lines = ["The teacher's own answers (before any person corrected them) against each truth, with 95% Wilson "
             "intervals:", ""]
    for model, estimate in written.teacher:
        note = TRUTH_NOTES.get(estimate.truth, "")
        lines.append(f"- {md_code(model)} against {md_text(estimate.truth)}: accuracy {estimate.value:.3f} "
                     f"[{estimate.low:.3f}, {estimate.high:.3f}] on {estimate.n} documents ({note})")
    return lines


def render_dataset_card(written: Written, project: str, filters: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    sources = ", ".join(f"{WHO[s]}: {n}" for s, n in written.by_source.most_common())
    columns = [
        "`id`, `text`: the document", "`label`: its current label (a person's over the teacher's, the newest of each; "
        "the gold label where neither gave one)", "`source`: who gave `label` (`human`, `teacher` or `gold`)",
        "`annotator`: the person, where one gave it", "`teacher_model`, `teacher_label`, `teacher_confidence`: the "
        "teacher's own answer where it gave one (kept when a person changed the label)", "`run_id`: the run that "
        "bought the teacher's answer", "`split`: `pool` (training), `val`, `test`, or `check` (the sample people "
        "label to grade the student: keep it out of training)", "`gold_label`: the corpus's own label, where known",
        "`generated`: a document the teacher wrote (PGKD), not one of the corpus's", "`suspicion`: how likely the "
        "teacher's label is wrong, from `kdstudio audit` (out-of-fold students)" + (
            "" if written.suspicion else "; not computed for this export (`--suspicion`)")]
    return "\n".join([
        *front_matter(written), f"# {md_text(project)}: labelled documents", "",
        f"{written.rows} documents exported by kdstudio {__version__} on {when} ({md_text(filters)}). Labels given by "
        f"{sources}.", "", "## Labels", "", *label_table(written), "", "## Columns", "",
        *[f"- {c}" for c in columns], "", "## How far the teacher can be trusted", "", *teacher_lines(written), "",
    ])
