"""The sentence-transformer encoder: the bundled all-MiniLM-L6-v2 (or any sentence-transformers folder), mean pooled
and L2-normalized. Exported to ONNX by `torch.onnx.export(dynamo=False)`; torch and transformers load only when
needed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.cache import cache_root, publish_file
from kdstudio.embeddings import load_sentence_transformer, resolve_model_path
from kdstudio.interfaces import Encoder, EncoderGraph
from kdstudio.torch_onnx import torch_to_onnx


class SentenceTransformerEncoder(Encoder):
    """A sentence transformer (default: the bundled all-MiniLM-L6-v2): accurate, ~22 long articles/s on 2 cores."""

    name = "minilm"

    @property
    def key(self) -> str:
        # The model's name alone: projects made before encoders were plugins keep their vectors.
        return self.model

    def load(self, on_progress: Callable[[str, int, int], None] | None = None) -> Any:
        return load_sentence_transformer(self.model, self.max_length, self.device)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.load().encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False).astype(np.float32)

    def onnx_graph(self, work: Path, opset: int) -> EncoderGraph:
        import onnx

        source = Path(resolve_model_path(self.model))
        # The graph depends on the model's files, the opset and the exporting libraries only (batch and sequence sizes
        # are dynamic): it is exported once a machine and reused by every later export (10-20 s saved each).
        cached = cache_root() / "onnx" / f"{_slug(self.model)}-{_graph_key(source, opset)}.onnx"
        if not cached.is_file():
            torch_to_onnx(_mean_pooled_encoder(str(source)), work / "encoder.onnx", "embedding", opset)
            if not publish_file(work / "encoder.onnx", cached):
                cached = work / "encoder.onnx"
        return EncoderGraph(onnx.load(str(cached)), source / "tokenizer.json", self.max_length,
                            _max_positions(source),
                            details={"encoder": self.model, "pooling": "mean, L2-normalized"})


GRAPH_VERSION = 1  # the mean-pooled, L2-normalized graph below: raise it when the graph changes


def _graph_key(source: Path, opset: int) -> str:
    """What the exported graph depends on: the model's configuration and weights (by size and time), the opset and
    the libraries that export it."""
    from importlib.metadata import version

    files = {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in sorted(source.iterdir())
             if p.is_file() and p.suffix in (".json", ".safetensors", ".bin")}
    identity = {"files": files, "opset": opset, "torch": version("torch"), "transformers": version("transformers"),
                "graph": GRAPH_VERSION}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _slug(model: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(model).name)[:40]


def _mean_pooled_encoder(model_path: str) -> Any:
    import torch
    from transformers import AutoModel

    class MeanPooledEncoder(torch.nn.Module):
        """What sentence-transformers computes for the MiniLM: token states, masked mean, unit length."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()  # its weights "load report" is expected, not news
    # The eager attention exports to plain ONNX ops; the fused kernels of other implementations do not.
    encoder = AutoModel.from_pretrained(model_path, attn_implementation="eager").eval()
    return MeanPooledEncoder(encoder).eval()


def _max_positions(model_path: Path) -> int | None:
    """The encoder's position limit: the runtime refuses a max_length above it instead of failing on long texts."""
    try:
        return int(json.loads((model_path / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
