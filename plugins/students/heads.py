"""scikit-learn classifiers on sentence embeddings. Each accepts sample weights and soft labels, and returns
probabilities over the whole label set even when some classes have one example or none yet."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.errors import KdError
from kdstudio.interfaces import Option, Student

META = "student.json"
ESTIMATOR = "estimator.skops"
LEGACY = "student.joblib"
# The only types a saved head may hold beyond what skops trusts by default (numpy, builtins, plain sklearn
# estimators): a file naming any other type is refused before anything in it is built, so that opening somebody
# else's project never runs their code.
TRUSTED = [
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "kdstudio_plugins.students.heads._WeightedLDA",
    "kdstudio_plugins.students.heads._SoftmaxMargins",
]


def expand_soft_labels(X: np.ndarray, soft: np.ndarray, weight: np.ndarray,
                       floor: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft targets for estimators that take hard labels: one weighted copy of a sample per class it has
    probability for. For a log-loss model this is exactly training on the teacher's probabilities."""
    rows, classes = np.nonzero(soft >= floor)
    return X[rows], classes, weight[rows] * soft[rows, classes]


class EmbeddingHead(Student):
    """Shared fitting logic: present classes only, mapped back onto the whole label set."""

    input = "embeddings"

    def _estimator(self, n_samples: int, class_counts: np.ndarray) -> Any:
        raise NotImplementedError

    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int, sample_weight: np.ndarray | None = None,
            soft_labels: np.ndarray | None = None) -> None:
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if soft_labels is not None:
            X, y, weight = expand_soft_labels(X, np.asarray(soft_labels), weight)
        keep = weight > 0
        X, y, weight = X[keep], y[keep], weight[keep]
        self.n_classes_ = n_classes
        self.dim_ = X.shape[1]
        present = np.unique(y)
        self.constant_: int | None = int(present[0]) if len(present) == 1 else None
        self.model_ = None
        if len(present) == 0:
            raise ValueError("a student needs at least one labelled example")
        if self.constant_ is None:
            counts = np.bincount(y, minlength=n_classes)[present]
            self.model_ = self._estimator(len(y), counts)
            # Weights are normalized to mean 1 so that regularization strength means the same at any scale.
            self.model_.fit(X, y, sample_weight=weight * len(weight) / weight.sum())

    def _raw_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        out = np.zeros((len(X), self.n_classes_))
        if self.constant_ is not None:
            out[:, self.constant_] = 1.0
            return out
        out[:, self.model_.classes_] = self._raw_proba(X)
        return out

    def onnx_graph(self, opset: int) -> Any:
        from kdstudio_plugins.students import onnx_heads

        dim = self.dim_
        if self.constant_ is not None:
            return onnx_heads.constant(dim, self.n_classes_, self.constant_, opset)
        model = self.model_
        if isinstance(model, _WeightedLDA):
            head = onnx_heads.linear_softmax(model.coef_, model.intercept_, 1.0, opset)
        elif isinstance(model, _SoftmaxMargins):
            coef, intercept = model.svm.coef_, model.svm.intercept_
            if coef.shape[0] == 1:  # binary: one margin, as two opposite scores
                coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
            head = onnx_heads.linear_softmax(coef, intercept, _SoftmaxMargins.SCALE, opset)
        else:
            head = onnx_heads.sklearn_head(model, dim, opset)
        return onnx_heads.onto_label_set(head, np.asarray(model.classes_), self.n_classes_)

    def save(self, directory: Path) -> None:
        skops_io = _skops_io()
        directory.mkdir(parents=True, exist_ok=True)
        if self.model_ is not None:
            skops_io.dump(self.model_, directory / ESTIMATOR)
        options = {o.name: getattr(self, o.name) for o in self.options}
        meta = {"student": self.name, "options": options, "n_classes": self.n_classes_, "dim": self.dim_,
                "constant": self.constant_}
        (directory / META).write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Student:
        if not (directory / META).exists():
            hint = ("it was saved by an older kdstudio as a pickle, which could run code when loaded"
                    if (directory / LEGACY).exists() else "the folder holds no saved student")
            raise KdError(f"refusing to load the student in {directory}: {hint}",
                          "distill again to save it in the safe format")
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
        student = cls(**meta["options"])
        student.n_classes_, student.dim_, student.constant_ = meta["n_classes"], meta["dim"], meta["constant"]
        student.model_ = None if student.constant_ is not None else _load_estimator(directory / ESTIMATOR)
        return student


def _skops_io() -> Any:
    """skops.io, imported without torch. Building its list of trusted types walks every scikit-learn package, and
    scikit-learn's array-API shim for torch imports torch: 0.4 GB and over a second in every process that saves or
    loads a student. A placeholder stands in for that shim while skops imports; nothing here uses it."""
    shim = "sklearn.externals.array_api_compat.torch"
    placed = "skops.io" not in sys.modules and shim not in sys.modules and "torch" not in sys.modules
    if placed:
        sys.modules[shim] = types.ModuleType(shim)
    try:
        import skops.io
    finally:
        if placed:
            sys.modules.pop(shim, None)
    return skops.io


def _load_estimator(path: Path) -> Any:
    skops_io = _skops_io()
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return skops_io.load(path, trusted=TRUSTED)
    except UntrustedTypesFoundException as exc:
        raise KdError(f"refusing to load {path}: it holds types a kdstudio student never uses ({exc})",
                      "only load students this project saved; distill again") from None
    except (OSError, ValueError, KeyError) as exc:
        raise KdError(f"the student file {path} cannot be read: {exc}", "distill again") from None


class LogisticRegressionStudent(EmbeddingHead):
    """Multinomial logistic regression on embeddings: fast, calibrated, the default student."""

    name = "logreg"
    options = (Option("C", float, 10.0, "inverse regularization strength", low=1e-9),
               Option("max_iter", int, 1000, "solver iterations", low=1))

    def _estimator(self, n_samples: int, class_counts: np.ndarray) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=self.max_iter)


class LinearSVMStudent(EmbeddingHead):
    """Linear SVM with sigmoid-calibrated probabilities (softmax of margins while a class has one example)."""

    name = "svm"
    options = (Option("C", float, 1.0, "inverse regularization strength", low=1e-9),
               Option("calibration_folds", int, 3, "cross-validation folds for calibration", low=2))

    def _estimator(self, n_samples: int, class_counts: np.ndarray) -> Any:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import LinearSVC

        folds = min(self.calibration_folds, int(class_counts.min()))
        if folds >= 2:
            return CalibratedClassifierCV(LinearSVC(C=self.C), method="sigmoid", cv=folds)
        return _SoftmaxMargins(LinearSVC(C=self.C))


class _SoftmaxMargins:
    """An SVM's decision values through a softmax: probabilities when there is too little data to calibrate."""

    SCALE = 3.0

    def __init__(self, svm: Any) -> None:
        self.svm = svm

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> _SoftmaxMargins:
        self.svm.fit(X, y, sample_weight=sample_weight)
        self.classes_ = self.svm.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        scores = self.svm.decision_function(X)
        if scores.ndim == 1:
            scores = np.stack([-scores, scores], axis=1)
        scores = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(scores * self.SCALE)
        return e / e.sum(axis=1, keepdims=True)


class LDAStudent(EmbeddingHead):
    """Linear discriminant analysis with shrinkage, weighted (scikit-learn's LDA takes no sample weights)."""

    name = "lda"
    options = (Option("shrinkage", float, -1.0, "covariance shrinkage in [0, 1]; -1 = Ledoit-Wolf estimate",
                      low=-1.0, high=1.0),)

    def _estimator(self, n_samples: int, class_counts: np.ndarray) -> Any:
        return _WeightedLDA(self.shrinkage)


class _WeightedLDA:
    def __init__(self, shrinkage: float) -> None:
        self.shrinkage = shrinkage

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray) -> _WeightedLDA:
        from sklearn.covariance import ledoit_wolf_shrinkage

        X = X.astype(np.float64)
        w = sample_weight / sample_weight.sum()
        self.classes_ = np.unique(y)
        means = np.stack([np.average(X[y == c], axis=0, weights=w[y == c]) for c in self.classes_])
        centered = X - means[np.searchsorted(self.classes_, y)]
        scaled = centered * np.sqrt(w)[:, None]
        cov = scaled.T @ scaled
        d = X.shape[1]
        shrink = self.shrinkage if self.shrinkage >= 0 else ledoit_wolf_shrinkage(
            centered * np.sqrt(w * len(w))[:, None], assume_centered=True)
        cov = (1 - shrink) * cov + shrink * np.trace(cov) / d * np.eye(d)
        precision = np.linalg.pinv(cov)
        priors = np.array([w[y == c].sum() for c in self.classes_])
        self.coef_ = means @ precision
        self.intercept_ = -0.5 * np.einsum("kd,kd->k", self.coef_, means) + np.log(priors)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        scores = X.astype(np.float64) @ self.coef_.T + self.intercept_
        scores -= scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)


class RandomForestStudent(EmbeddingHead):
    """Random forest on embeddings."""

    name = "rf"
    options = (Option("n_estimators", int, 300, "trees", low=1), Option("seed", int, 0, "random state"))

    def _estimator(self, n_samples: int, class_counts: np.ndarray) -> Any:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=self.n_estimators, random_state=self.seed, n_jobs=-1)


class GradientBoostingStudent(EmbeddingHead):
    """Histogram gradient boosting on embeddings (leaf size adapts to the number of labels)."""

    name = "gbdt"
    options = (Option("max_iter", int, 100, "boosting iterations", low=1),
               Option("learning_rate", float, 0.1, "shrinkage", low=1e-9, high=1.0),
               Option("seed", int, 0, "random state"))

    def _estimator(self, n_samples: int, class_counts: np.ndarray) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier

        # The default leaf of 20 samples cannot split a seed set of 20 documents at all.
        leaf = int(np.clip(n_samples // 20, 2, 20))
        return HistGradientBoostingClassifier(max_iter=self.max_iter, learning_rate=self.learning_rate,
                                              min_samples_leaf=leaf, early_stopping=False,
                                              random_state=self.seed)
