"""The ONNX exporter: one graph from token ids to label and probabilities. For an embeddings student the encoder
(the graph its encoder plugin builds: the MiniLM with mean pooling, or a static embedding lookup) and the student's
head (skl2onnx, or kdstudio's own linear graphs) are joined
with `onnx.compose.merge_models`; a fine-tuned transformer exports whole. Optional int8 dynamic quantization of the
encoder's weights, one scale per channel. torch, transformers, onnx and onnxruntime's quantizer are imported only
here."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kdstudio import __version__
from kdstudio.interfaces import ExportContext, ExportedModel, Exporter, ExportUnsupported, Option, Student
from kdstudio.runtime import file_sha256

MODEL, TOKENIZER, LABELS, META = "model.onnx", "tokenizer.json", "labels.json", "kdstudio_model.json"
FORMAT = 1
HEAD = "head/"


def _with_label_and_confidence(model: Any) -> Any:
    """Append "label" (int64 [N]) and "confidence" (float [N]) computed from "probabilities"."""
    import onnx

    h = onnx.helper
    graph = model.graph
    graph.node.append(h.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0, name="label"))
    graph.node.append(h.make_node("ReduceMax", ["probabilities"], ["confidence"], axes=[1], keepdims=0,
                                  name="confidence"))
    graph.output.append(h.make_tensor_value_info("label", onnx.TensorProto.INT64, [None]))
    graph.output.append(h.make_tensor_value_info("confidence", onnx.TensorProto.FLOAT, [None]))
    return model


def _float_tables(model: Any) -> Any:
    """A copy of `model` whose float16 lookup tables (a static encoder's) are float32: the quantizer takes its scales'
    type from the table, and DequantizeLinear refuses float16 scales before opset 19. The int8 table is then half the
    float16 one (99.8% of labels kept against fp32 on 1,000 bbc-news articles)."""
    import onnx
    from onnx import numpy_helper

    widened = onnx.ModelProto()
    widened.CopyFrom(model)
    tables = {node.input[0] for node in widened.graph.node if node.op_type == "Gather"}
    for init in widened.graph.initializer:
        if init.name in tables and init.data_type == onnx.TensorProto.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype("float32"), init.name))
    return widened


class OnnxExporter(Exporter):
    """One ONNX graph from token ids to label and probabilities, with tokenizer.json and labels.json."""

    name = "onnx"
    options = (Option("opset", int, 17, "ONNX opset of the graph", low=13, high=21),)

    def export(self, student: Student, out_dir: Path, context: ExportContext) -> ExportedModel:
        if context.quantize not in (None, "int8"):
            raise ExportUnsupported(f"quantization {context.quantize!r} is not available", "use --quantize int8")
        created = not out_dir.exists()
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self._export(student, out_dir, context)
        except BaseException:
            if created:  # a failed export leaves no folder it made
                shutil.rmtree(out_dir, ignore_errors=True)
            raise

    def _export(self, student: Student, out_dir: Path, context: ExportContext) -> ExportedModel:
        import onnx

        # The work folder is inside the output folder (which kdstudio builds beside the final one): a killed export
        # leaves nothing in the system's temp folder, and the next export cleans it up.
        with tempfile.TemporaryDirectory(prefix=".work-", dir=out_dir) as tmp:
            work = Path(tmp)
            tokenizing: dict[str, Any]
            if student.input == "embeddings":
                head = student.onnx_graph(self.opset)  # first: an unexportable student fails before any work
                encoder = context.encoder.onnx_graph(work, self.opset)
                model = self._join(encoder.model, head)
                if encoder.tokenizer != work / TOKENIZER:
                    shutil.copyfile(encoder.tokenizer, work / TOKENIZER)
                # Both built-in encoders strip texts (sentence-transformers does, the static encoder follows).
                tokenizing = {"max_length": encoder.max_length, "max_positions": encoder.max_positions,
                              "strip_text": True, "special_tokens": encoder.special_tokens,
                              "char_limit": encoder.char_limit, "batch_size": encoder.batch_size,
                              "batch_tokens": encoder.batch_tokens,
                              "encoder": context.encoder.name}
                details = encoder.details
            elif student.input == "texts":
                model = student.onnx_graph(self.opset)
                tokenizing = {"max_length": student.save_tokenizer(work), "max_positions": None,
                              "strip_text": False}
                details = {"encoder": f"fine-tuned ({student.name})"}
            else:
                raise ExportUnsupported(f"student {student.name} reads {student.input!r}, which ONNX export does "
                                        "not know")
            model = _with_label_and_confidence(model)
            onnx.checker.check_model(model)
            fp32 = work / "fp32.onnx"
            onnx.save(model, str(fp32))
            if context.quantize == "int8":
                widened = work / "widened.onnx"
                onnx.save(_float_tables(model), str(widened))
                self._quantize(widened, out_dir / MODEL, [n.name for n in model.graph.node if n.name.startswith(HEAD)])
            else:
                shutil.copyfile(fp32, out_dir / MODEL)
            shutil.copyfile(work / TOKENIZER, out_dir / TOKENIZER)
        (out_dir / LABELS).write_text(json.dumps(context.labels, ensure_ascii=False, indent=1), encoding="utf-8")
        meta = {"format": FORMAT, **tokenizing, "opset": self.opset,
                "quantization": context.quantize, "student": student.name, "kdstudio_version": __version__,
                "inputs": ["input_ids", "attention_mask"], "outputs": ["probabilities", "label", "confidence"],
                # The runtime refuses a folder whose files changed since (a partial copy, a corrupted download).
                "sha256": {name: file_sha256(out_dir / name) for name in (MODEL, TOKENIZER, LABELS)}}
        (out_dir / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        size = (out_dir / MODEL).stat().st_size
        return ExportedModel(out_dir, [MODEL, TOKENIZER, LABELS, META],
                             {**details, "max_tokens": tokenizing["max_length"], "opset": self.opset,
                              "precision": context.quantize or "fp32",
                              "size_mb": round(size / 1e6, 1)})

    @staticmethod
    def _join(encoder: Any, head: Any) -> Any:
        import onnx

        head = onnx.compose.add_prefix(head, HEAD)
        head.ir_version = encoder.ir_version
        for node in head.graph.node:
            node.name = node.name if node.name.startswith(HEAD) else HEAD + node.name
        joined = onnx.compose.merge_models(encoder, head, io_map=[("embedding", f"{HEAD}embedding")])
        # The head's output keeps the plain name the runtime asks for.
        produced = f"{HEAD}probabilities"
        for node in joined.graph.node:
            node.output[:] = ["probabilities" if o == produced else o for o in node.output]
        for output in joined.graph.output:
            if output.name == produced:
                output.name = "probabilities"
        # merge_models lists a domain once per model; tools downstream (the quantizer) want each domain once.
        versions: dict[str, int] = {}
        for opset in joined.opset_import:
            versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
        del joined.opset_import[:]
        joined.opset_import.extend(onnx.helper.make_opsetid(domain, v) for domain, v in versions.items())
        return joined

    @staticmethod
    def _quantize(source: Path, target: Path, keep_fp32: list[str]) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # The encoder's weights become int8; the small head stays exact. (The quantizer's advice to pre-process is
        # about static quantization; it is logged on the root logger, so it is held back while quantizing.)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            # One scale per output channel: per-tensor scales changed 1.6% of labels against fp32 on bbc-news (largest
            # probability difference 0.40), per-channel 0.4% (0.11), at the same speed (docs/benchmarks.md).
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, nodes_to_exclude=keep_fp32,
                             per_channel=True)
        finally:
            root.setLevel(level)
