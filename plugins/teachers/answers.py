"""Strict reading of an LLM's answers: a label from the set or an error, never a guess; and the teacher's
confidence from label-token logprobs, from votes of k samples, or as the model states it."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
LABEL_VALUE = re.compile(r'"label"\s*:\s*"')


class BadAnswer(ValueError):
    """The reply is not a JSON object naming exactly one label of the set."""


@dataclass
class Parsed:
    label: str
    stated_confidence: float | None


def _json(content: str) -> tuple[Any, str]:
    """The reply as JSON (a code fence around it is tolerated), and the text that was read."""
    text = (content or "").strip()
    if not text:
        raise BadAnswer("empty reply")
    fenced = FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        return json.loads(text), text
    except ValueError:
        raise BadAnswer(f"not JSON: {text[:120]!r}") from None


def parse_label(content: str, labels: list[str]) -> Parsed:
    data, text = _json(content)
    if not isinstance(data, dict) or not isinstance(data.get("label"), str):
        raise BadAnswer(f"no \"label\" string in {text[:120]!r}")
    label = data["label"].strip()
    if label not in labels:
        by_case = {x.lower(): x for x in labels}
        if label.lower() not in by_case:
            raise BadAnswer(f"label {label[:60]!r} is not in the label set")
        label = by_case[label.lower()]
    stated = data.get("confidence")
    stated = float(stated) if isinstance(stated, int | float) and 0.0 <= stated <= 1.0 else None
    return Parsed(label, stated)


def probs_from_logprobs(content: str, tokens: list[dict[str, Any]], labels: list[str], chosen: str
                        ) -> dict[str, float] | None:
    """Label probabilities from the tokens where the label value is written: at each token on the chosen
    label's path, the probability of every alternative token goes to the labels it starts (shared equally);
    what is left on the path goes to the chosen label. None when the tokens do not line up with the content."""
    match = LABEL_VALUE.search(content)
    if not match or "".join(t["token"] for t in tokens) != content:
        return None
    value_start = match.end()
    mass = dict.fromkeys(labels, 0.0)
    path_p = 1.0
    prefix = ""  # the value written so far, on the chosen path
    offset = 0
    for token in tokens:
        text = token["token"]
        end = offset + len(text)
        if end <= value_start:
            offset = end
            continue
        lead = text[:max(0, value_start - offset)]  # a token that also carries the opening quote
        offset = end
        if prefix.startswith(chosen) or len(prefix) >= len(chosen) + 1:
            break
        for alt in token.get("top_logprobs") or []:
            if alt["token"] == text or not alt["token"].startswith(lead):
                continue
            candidate = prefix + alt["token"][len(lead):]
            starts = [x for x in labels if x != chosen and _continues(x, candidate)]
            for label in starts:
                mass[label] += path_p * math.exp(alt["logprob"]) / len(starts)
        path_p *= math.exp(token["logprob"])
        prefix += text[len(lead):]
    mass[chosen] += path_p
    total = sum(mass.values())
    if total <= 0:
        return None
    return {x: v / total for x, v in mass.items()}


def _continues(label: str, written: str) -> bool:
    """Whether `written` (a partial label value) could be the start of `label`, closing quote included."""
    return label.startswith(written) or written.startswith(label + '"') or written == label


def probs_from_votes(answers: list[str], labels: list[str]) -> dict[str, float]:
    votes = Counter(answers)
    return {x: votes.get(x, 0) / len(answers) for x in labels}


def probs_from_stated(chosen: str, confidence: float, labels: list[str]) -> dict[str, float]:
    rest = (1.0 - confidence) / max(1, len(labels) - 1)
    return {x: confidence if x == chosen else rest for x in labels}


def parse_samples(content: str, labels: list[str], max_chars: int) -> tuple[list[tuple[str, str]], int]:
    """Generated samples: (text, label) pairs that are usable, and how many were not (label outside the set,
    empty or overlong text)."""
    data, _ = _json(content)
    items = data.get("samples") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise BadAnswer("no \"samples\" list in the reply")
    kept, rejected = [], 0
    for item in items:
        if not isinstance(item, dict):
            rejected += 1
            continue
        sample_text, label = item.get("text"), item.get("label")
        if not isinstance(sample_text, str) or not sample_text.strip() or len(sample_text) > max_chars \
                or label not in labels:
            rejected += 1
            continue
        kept.append((sample_text.strip(), label))
    return kept, rejected
