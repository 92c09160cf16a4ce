"""What export decides before and around the ONNX work, tested without it: flags checked before anything is written,
a student that cannot be exported, the cascade's threshold, the agreement warning, the runtime's token-budget
batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from kdstudio.cascade import choose_threshold
from kdstudio.export import agreement_warnings, compare
from kdstudio.interfaces import ExportContext, ExportUnsupported, Student
from kdstudio.plugins import get_plugins
from kdstudio.runtime import Classifier


class NoOnnx(Student):
    name = "no-onnx"

    def fit(self, X, y, n_classes, sample_weight=None, soft_labels=None):
        self.n_classes = n_classes

    def predict_proba(self, X):
        return np.full((len(X), self.n_classes), 1 / self.n_classes)

    def save(self, directory):
        directory.mkdir(parents=True)

    @classmethod
    def load(cls, directory):
        return cls()


@pytest.mark.parametrize("args", [["--defer-below", "0.5"], ["--cascade", "static", "--target-accuracy", "1.5"]])
def test_cascade_flags_out_of_place_are_refused(args: list[str], tmp_path: Path):
    result = cli("export", "-p", str(tmp_path / "none"), "--out", str(tmp_path / "m"), *args)
    assert result.returncode != 0 and "goes with --cascade" in result.stderr
    assert not (tmp_path / "m").exists()


def test_the_threshold_is_the_lowest_that_reaches_the_target():
    y = np.array([0, 0, 1, 1, 0, 1])
    # The fast tier is right on its three surest, then wrong; the slow tier is right everywhere but document 0.
    fast = np.array([[.99, .01], [.9, .1], [.2, .8], [.7, .3], [.4, .6], [.6, .4]])
    slow = np.array([[.4, .6], [.9, .1], [.1, .9], [.1, .9], [.9, .1], [.2, .8]])
    threshold, accuracy = choose_threshold(fast, slow, y, target=1.0)
    assert (threshold, accuracy) == (0.8, 1.0)  # documents 0, 1 and 2 answered fast, the rest slow: all right
    threshold, accuracy = choose_threshold(fast, slow, y, target=0.0)
    assert threshold == 0.6  # everything fast
    # Tied confidences go together: answering only the first of two documents at 0.9 would reach the target, but a
    # threshold cannot split them, so the slow tier answers all (a threshold above every confidence).
    tied = np.array([[.9, .1], [.9, .1], [.4, .6]])
    threshold, accuracy = choose_threshold(tied, np.eye(2)[[0, 1, 1]], np.array([0, 1, 1]), 1.0)
    assert threshold > 1.0 and accuracy == 1.0


def test_export_warns_with_the_figure_when_labels_move():
    in_process = np.eye(3)[[0, 1, 2, 0, 1] * 20]
    exported = in_process.copy()
    exported[:2] = [[0.3, 0.7, 0.0], [0.6, 0.4, 0.0]]
    parity = compare(exported.astype(np.float32), in_process, None, ["a", "b", "c"])
    (warning,) = agreement_warnings(parity, "int8")
    assert "label on only 98.0% of 100 test documents (largest probability difference 0.70)" in warning
    assert "export without --quantize" in warning
    assert agreement_warnings(compare(in_process.astype(np.float32), in_process, None, ["a", "b", "c"]), "int8") == []


def test_token_budget_batches_cover_every_text_once_within_the_budget():
    classifier = Classifier.__new__(Classifier)
    classifier.meta, classifier.batch_tokens_apply, classifier.batch_size = {"batch_tokens": 100}, True, 16
    lengths = np.array([50, 0, 3, 3, 120, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 40])
    batches = list(classifier._batches(lengths))
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(1, lengths[batch].max()) <= 100
    # Sorted 0, 3, 3, 10 x 10, 40, 50, 120: ten texts of up to 10 tokens, three more tens, 40 with 50, 120 alone.
    assert [len(b) for b in batches] == [10, 3, 2, 1]


def test_a_student_that_cannot_be_exported_says_so(tmp_path: Path):
    exporter = get_plugins().get("exporter", "onnx").cls()
    with pytest.raises(ExportUnsupported, match="student no-onnx cannot be exported to ONNX"):
        exporter.export(NoOnnx(), tmp_path / "m", ExportContext(["a", "b"], get_plugins().get("encoder", "minilm").cls(
            "all-MiniLM-L6-v2", 256, 32)))
    assert not (tmp_path / "m").exists()




def test_card_flags_are_checked_before_anything_is_written(tmp_path: Path):
    for flags, message in ((["--license", "apache 2.0; rm"], "is not a licence id"),
                           (["--language", "English"], "is not a language code")):
        result = cli("export", "-p", str(tmp_path / "none"), "--out", str(tmp_path / "m"), *flags)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert not (tmp_path / "m").exists()
