"""The embedding heads as ONNX graphs: input "embedding" (float [N, dim]), output "probabilities" (float [N, K])
over the whole label set. scikit-learn estimators go through skl2onnx; kdstudio's own linear heads are written
directly. onnx and skl2onnx are imported only here, when a student is exported."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

OPSET_ML = 3


def _helper() -> Any:
    import onnx

    return onnx


def _graph(nodes: list[Any], initializers: list[Any], dim: int, k_out: int, opset: int, name: str) -> Any:
    onnx = _helper()
    h = onnx.helper
    graph = h.make_graph(nodes, name, [h.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, [None, dim])],
                         [h.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [None, k_out])],
                         initializers)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])


def linear_softmax(coef: np.ndarray, intercept: np.ndarray, scale: float, opset: int) -> Any:
    """softmax(scale * (x W^T + b)): the weighted LDA, and an SVM's margins before it can be calibrated."""
    onnx = _helper()
    h, nh = onnx.helper, onnx.numpy_helper
    weights = nh.from_array((np.asarray(coef, dtype=np.float64).T * scale).astype(np.float32), "head_W")
    bias = nh.from_array((np.asarray(intercept, dtype=np.float64) * scale).astype(np.float32), "head_b")
    nodes = [h.make_node("MatMul", ["embedding", "head_W"], ["head_xw"]),
             h.make_node("Add", ["head_xw", "head_b"], ["head_scores"]),
             h.make_node("Softmax", ["head_scores"], ["probabilities"], axis=1)]
    return _graph(nodes, [weights, bias], coef.shape[1], coef.shape[0], opset, "linear_softmax")


def constant(dim: int, n_classes: int, index: int, opset: int) -> Any:
    """A student that saw a single class: probability 1 for it, whatever the input."""
    onnx = _helper()
    h, nh = onnx.helper, onnx.numpy_helper
    row = np.zeros((1, n_classes), dtype=np.float32)
    row[0, index] = 1.0
    nodes = [h.make_node("ReduceSum", ["embedding", "head_axes"], ["head_sum"], keepdims=1),
             h.make_node("Mul", ["head_sum", "head_zero"], ["head_zeros"]),
             h.make_node("Add", ["head_zeros", "head_row"], ["probabilities"])]
    inits = [nh.from_array(np.array([1], dtype=np.int64), "head_axes"),
             nh.from_array(np.zeros((1, 1), dtype=np.float32), "head_zero"), nh.from_array(row, "head_row")]
    return _graph(nodes, inits, dim, n_classes, opset, "constant")


@contextlib.contextmanager
def _bool_attributes_as_ints() -> Iterator[None]:
    """skl2onnx 1.20 hands onnx a mix of bools and uint8 for HistGradientBoosting's missing-value flags, which
    onnx 1.2x rejects; they are 0/1 flags, so they are passed on as ints during the conversion only."""
    from skl2onnx.common import _container

    original = _container.ModelComponentContainer.add_node

    def add_node(self: Any, *args: Any, **attrs: Any) -> Any:
        for key, value in attrs.items():
            if isinstance(value, list | tuple) and any(isinstance(x, bool | np.bool_) for x in value):
                attrs[key] = [int(x) for x in value]
        return original(self, *args, **attrs)

    _container.ModelComponentContainer.add_node = add_node
    try:
        yield
    finally:
        _container.ModelComponentContainer.add_node = original


def sklearn_head(estimator: Any, dim: int, opset: int) -> Any:
    """A fitted scikit-learn classifier through skl2onnx; its outputs are renamed so that "probabilities" is the
    probability tensor (no ZipMap)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    with _bool_attributes_as_ints():
        model = to_onnx(estimator, initial_types=[("embedding", FloatTensorType([None, dim]))],
                        options={id(estimator): {"zipmap": False}}, target_opset={"": opset, "ai.onnx.ml": OPSET_ML})
    graph = model.graph
    produced = graph.output[1].name  # skl2onnx's outputs: label, probabilities
    for node in graph.node:
        node.name = f"head_{node.name}"
        node.output[:] = ["probabilities" if o == produced else o for o in node.output]
    label_output = graph.output[0]
    graph.output.remove(label_output)
    graph.output[0].name = "probabilities"
    return model


def onto_label_set(head: Any, present: np.ndarray, n_classes: int) -> Any:
    """Widen a head that knows only the classes it saw to the whole label set (zeros for the others)."""
    onnx = _helper()
    h, nh = onnx.helper, onnx.numpy_helper
    if len(present) == n_classes and np.array_equal(present, np.arange(n_classes)):
        return head
    mapping = np.zeros((len(present), n_classes), dtype=np.float32)
    mapping[np.arange(len(present)), present] = 1.0
    graph = head.graph
    for node in graph.node:
        node.input[:] = ["head_present_probs" if i == "probabilities" else i for i in node.input]
        node.output[:] = ["head_present_probs" if o == "probabilities" else o for o in node.output]
    graph.node.append(h.make_node("MatMul", ["head_present_probs", "head_onto_labels"], ["probabilities"]))
    graph.initializer.append(nh.from_array(mapping, "head_onto_labels"))
    out = graph.output[0]
    out.type.tensor_type.shape.dim[1].dim_value = n_classes
    return head
