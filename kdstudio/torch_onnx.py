"""Exporting a torch text model to ONNX, shared by the exporter and by students that export themselves. torch is
imported only when called."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def torch_to_onnx(module: Any, path: Path, output: str, opset: int) -> None:
    """Export a module taking (input_ids, attention_mask) with dynamic batch and sequence sizes, by the
    TorchScript-based exporter (`dynamo=False`), which needs no package beyond torch and onnx."""
    import torch

    warnings.filterwarnings("ignore", module=r"torch\.onnx.*")
    warnings.filterwarnings("ignore", module=r"transformers\..*")  # tracer notes on branches that never vary here
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    ids = torch.ones((2, 16), dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
               output: {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(module.eval(), (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=[output], dynamic_axes=dynamic, opset_version=opset, dynamo=False)
