"""Secrets (API keys, tokens) that the process holds: they are taken out of every message before it is printed,
logged or stored, even when a provider or proxy echoes them back."""

from __future__ import annotations

import os
import re
import threading

MASK = "[redacted]"
# Environment variables whose values are secrets, by name: OPENAI_API_KEY, LABEL_STUDIO_API_KEY, HF_TOKEN, ...
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
# Shapes that are secrets wherever they appear, known to this process or not.
SECRET_SHAPES = (
    re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}"),  # Authorization header values
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
)
MIN_LENGTH = 6  # shorter values ("1", "true") are settings, not secrets, and masking them would garble text

_lock = threading.Lock()
_known: set[str] = set()


def remember(value: str | None) -> None:
    """Register a secret this process holds (a key read from a variable whose name does not say so)."""
    if value and len(value) >= MIN_LENGTH:
        with _lock:
            _known.add(value)


def _environment_secrets() -> set[str]:
    return {v for k, v in os.environ.items() if SECRET_NAME.search(k) and v and len(v) >= MIN_LENGTH}


def redact(text: str | None) -> str | None:
    """`text` with every secret replaced by a mask; None stays None."""
    if not text:
        return text
    with _lock:
        secrets = _known | _environment_secrets()
    # Longest first, so that a secret containing another is masked whole.
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    for shape in SECRET_SHAPES:
        text = shape.sub(lambda m: (m.group(1) + m.group(2) + MASK) if m.lastindex else MASK, text)
    return text
