"""Fewer teacher calls: free labels from the pool, the cold-start selector, the budget autopilot, stop rules that need
a validation split, sized thread pools, batched writes of free answers, and the zero-shot teacher that says when it
is guessing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_ENCODER, cheap_slice, cli, fresh_copy, run_cli
from threadpoolctl import threadpool_info

from kdstudio.autopilot import GainRule, forecast, power_law, should_stop
from kdstudio.errors import KdError
from kdstudio.interfaces import FreeLabelTask
from kdstudio.loop import DistillConfig
from kdstudio.plugins import get_plugins
from kdstudio.pool_view import PoolView
from kdstudio.project import Project
from kdstudio.store import Store
from kdstudio.threads import sized_pools


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cheap_slice(tmp_path_factory.mktemp("fewer") / "bbc", limit=240, seed=11)


@pytest.fixture
def bbc(embedded: Path, tmp_path: Path) -> Path:
    return fresh_copy(embedded, tmp_path)


def _config(**changes) -> DistillConfig:
    return DistillConfig(**{"teacher": "oracle", "selector": "margin", "seed_size": 10, "batch": 10,
                            "budget_labels": 50, "val_limit": 40, **changes})


# -- free labels ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["self-train", "spread"])
def test_free_labels_train_the_student_and_are_never_stored_or_counted(bbc: Path, name: str):
    with Project.open(bbc) as project:
        result = project.distill(_config(free_labels=name))
        added = [r.metrics.get("free_added", 0) for r in result.rounds]
        notes = [r.metrics.get("free_labels", "") for r in result.rounds]
        stored = project.store.con.execute("SELECT count(*) FROM labels WHERE run_id = ?",
                                           [result.run_id]).fetchone()[0]
    assert max(added) > 0, notes
    assert all(note.startswith(("self-training", "label spreading")) for note in notes)
    # 40 validation labels on 5 classes: each class is validated on its own documents too, and the note says so.
    assert all("of 5 classes validated on their own" in note for note in notes if " at confidence >= " in note), notes
    # What the run bought, and nothing more: 50 training labels and its validation labels, each one call.
    assert result.rounds[-1].n_labels == 50 == result.train_labels
    assert result.calls == 50 + result.val_labels == stored


def test_free_labels_round_line_and_run_view_say_what_was_added(bbc: Path):
    with Project.open(bbc) as project:
        run_id = project.distill(_config(free_labels="self-train", budget_labels=30)).run_id
    shown = cli("runs", "-p", str(bbc), "--run", str(run_id))
    assert shown.returncode == 0, shown.stderr
    assert "free labels" in shown.stdout and "+" in shown.stdout
    line = cli("distill", "-p", str(bbc), "--teacher", "oracle", "--budget-labels", "30", "--seed-size", "10",
                   "--batch", "10", "--val-size", "40", "--free-labels", "spread", "--free-labels-option",
                   "precision=0.9")
    assert line.returncode == 0, line.stderr
    assert "label spreading +" in line.stdout or "label spreading: no confidence" in line.stdout


def test_self_training_threshold_is_chosen_on_validation_and_caps_each_class():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 4
    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(3, size=n)
        return (centres[y] + rng.normal(size=(n, 8))).astype(np.float32), y
    X, y = sample(30)
    pool, _ = sample(400)
    val_X, val_y = sample(60)
    student_cls = get_plugins().get("student", "logreg").cls

    def fit(X_, y_, w_):
        s = student_cls()
        s.fit(X_, y_, 3, sample_weight=w_)
        return s

    labeller = get_plugins().get("free_labels", "self-train").cls(ratio=2.0, weight=0.25)
    pool_y = np.full(len(pool), -1)
    pool_y[:5] = 0  # labelled rows are never pseudo-labelled
    free = labeller.pseudo_labels(FreeLabelTask(X, y, np.ones(30), 3, pool, pool_y, val_X, val_y, fit))
    assert len(free.rows) and not set(free.rows.tolist()) & set(range(5))
    assert (np.bincount(free.y, minlength=3) <= 2 * np.bincount(y, minlength=3)).all()
    assert np.allclose(free.weight, 0.25)
    # A demand no validation can meet adds nothing, and says why: validation labels the student always gets wrong.
    strict = get_plugins().get("free_labels", "self-train").cls(precision=1.0)
    none = strict.pseudo_labels(FreeLabelTask(X, y, np.ones(30), 3, pool, pool_y, val_X, (val_y + 1) % 3, fit))
    assert not len(none.rows) and "validation" in none.note


class _ProbabilityRows:
    """A student whose class probabilities are its input rows: the labeller's choice is then known exactly."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return X


def test_each_class_s_pseudo_labels_are_validated_on_its_own_documents():
    # Validation: 60 documents predicted as class 0, all right; 5 predicted as class 2, right on 2. Together they are
    # right 62 times of 65 (over 95%), which the commonest class makes; class 2 alone is right 2 times of 5.
    sure = {0: [0.9, 0.05, 0.05], 2: [0.05, 0.05, 0.9]}
    val_X = np.array([sure[0]] * 60 + [sure[2]] * 5)
    val_y = np.array([0] * 60 + [2, 2, 1, 1, 1])
    pool = np.array([sure[0]] * 20 + [sure[2]] * 20)
    task = FreeLabelTask(np.zeros((30, 3)), np.repeat(np.arange(3), 10), np.ones(30), 3, pool,
                         np.full(len(pool), -1), val_X, val_y, lambda *_: _ProbabilityRows())
    labeller = get_plugins().get("free_labels", "self-train").cls
    together = labeller(class_support=0).pseudo_labels(task)
    assert sorted(set(together.y.tolist())) == [0, 2]
    each = labeller().pseudo_labels(task)
    assert set(each.y.tolist()) == {0} and len(each.rows) == 20
    assert labeller().class_support == 5
    # Fewer validation documents than 5 a class: no class could be checked on its own, so all are checked together.
    wide = np.hstack([pool, np.zeros((len(pool), 17))])
    many = FreeLabelTask(np.zeros((30, 20)), np.repeat(np.arange(3), 10), np.ones(30), 20, wide,
                         np.full(len(pool), -1), np.hstack([val_X, np.zeros((len(val_X), 17))]), val_y,
                         lambda *_: _ProbabilityRows())
    assert sorted(set(labeller().pseudo_labels(many).y.tolist())) == [0, 2]


def test_free_labels_need_an_embeddings_student_and_validation(bbc: Path):
    with Project.open(bbc) as project:
        runs_before = len(project.runs())
        with pytest.raises(KdError, match="embeddings student"):
            project.distill(_config(free_labels="self-train", student="finetune"))
        with pytest.raises(KdError, match=r"need validation labels.*val_limit 0"):
            project.distill(_config(free_labels="spread", val_limit=0))
        assert len(project.runs()) == runs_before


# -- the cold-start selector ---------------------------------------------------------------------------------------


def test_typiclust_finds_a_rare_cluster_that_random_draws_miss():
    rng = np.random.default_rng(1)
    sizes = [600, 300, 60, 25, 15]
    centres = rng.normal(size=(5, 32)) * 3
    vectors = np.vstack([centres[c] + rng.normal(size=(n, 32)) for c, n in enumerate(sizes)]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cluster = np.repeat(np.arange(5), sizes)
    typiclust = get_plugins().get("selector", "typiclust").cls()
    pool = PoolView(np.arange(len(vectors)), lambda ids: vectors[ids], lambda ids: vectors[ids], [], None,
                    [f"c{i}" for i in range(5)], 0, np.random.default_rng(0))
    choice = typiclust.select(pool, 8)
    assert len(set(choice.positions)) == 8
    assert set(cluster[choice.positions].tolist()) == set(range(5))
    drawn = [len(set(cluster[np.random.default_rng(s).choice(len(vectors), 8, replace=False)].tolist()))
             for s in range(50)]
    assert np.mean(drawn) < 3.5  # random seeds of 8 usually miss the rare clusters


def test_typiclust_seeds_a_run(bbc: Path):
    with Project.open(bbc) as project:
        result = project.distill(_config(seed_selector="typiclust", budget_labels=20))
        first = project.rounds(result.run_id)[0]
    assert first.selector == "typiclust" and len(first.selected) == 10


# -- the autopilot ---------------------------------------------------------------------------------------------------


def test_gain_rule_forms_and_refusals():
    assert GainRule.parse("0.005/100") == GainRule(0.005, 100)
    assert GainRule.parse("0.01/USD") == GainRule(0.01, None)
    for bad in ("0.005", "/100", "0.005/0", "half/100", "0.005/100/2"):
        with pytest.raises(KdError, match="stop_when_gain_below"):
            GainRule.parse(bad)


def test_forecast_recovers_a_power_law_and_stops_only_when_confirmed():
    labels = list(range(20, 420, 20))
    truth = (0.95, 1.2, 0.6)
    accuracy = power_law(np.array(labels, dtype=float), *truth).tolist()
    rule = GainRule.parse("0.005/100")
    found = forecast(rule, labels, [0.0] * len(labels), accuracy)
    expected = power_law(np.array([500.0]), *truth)[0] - power_law(np.array([400.0]), *truth)[0]
    assert found is not None and found["gain"] == pytest.approx(expected, abs=1e-3)
    assert forecast(rule, labels[:4], [0.0] * 4, accuracy[:4]) is None  # too few rounds to fit
    low = {"gain": 0.001, "per": "100 labels"}
    assert should_stop(rule, [None, low]) == ""  # one forecast below the line is not enough
    assert should_stop(rule, [low, {"gain": 0.02, "per": "100 labels"}]) == ""
    assert "autopilot" in should_stop(rule, [low, low])


def test_autopilot_stops_a_run_and_shows_its_forecast(bbc: Path):
    with Project.open(bbc) as project:
        result = project.distill(_config(budget_labels=150, stop_when_gain_below="0.2/100"))
    assert result.stop_reason.startswith("autopilot"), result.stop_reason
    assert result.rounds[-1].n_labels < 150
    assert "forecast" in result.rounds[-1].metrics
    shown = cli("runs", "-p", str(bbc), "--run", str(result.run_id))
    assert "forecast pt/100" in shown.stdout


def test_stop_rules_without_validation_are_refused_with_one_line(bbc: Path):
    for flags in (["--patience", "2"], ["--target", "val.accuracy>=0.9"], ["--stop-when-gain-below", "0.005/100"]):
        done = cli("distill", "-p", str(bbc), "--teacher", "oracle", "--val-size", "0", *flags)
        assert done.returncode != 0
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert "need validation labels" in lines[0] and "Traceback" not in done.stderr, done.stderr
    per_dollar = cli("distill", "-p", str(bbc), "--teacher", "oracle", "--stop-when-gain-below", "0.01/usd")
    assert per_dollar.returncode != 0 and "per labels instead" in per_dollar.stderr
    with Project.open(bbc) as project:
        assert project.runs() == []


def test_split_carves_a_validation_split_from_untouched_pool_documents(tmp_path: Path):
    rows = [{"text": f"document number {i} about {'sport' if i % 2 else 'politics'}",
             "label": "sports" if i % 2 else "politics"} for i in range(60)]
    data = tmp_path / "docs.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    directory = tmp_path / "p"
    assert cli("init", str(directory), "--labels", "sports,politics").returncode == 0
    assert cli("import", str(data), "-p", str(directory), "--label-column", "label").returncode == 0
    with Project.open(directory) as project:
        touched = project.store.ids_in_split("pool")[0]
        project.set_label(touched, "sports")
    done = cli("split", "-p", str(directory), "val=0.2")
    assert done.returncode == 0, done.stderr
    assert "moved 12 pool documents to val" in done.stdout
    with Project.open(directory) as project:
        val = project.store.ids_in_split("val")
        assert len(val) == 12 and touched not in val
        gold = project.store.gold(val)
        assert sorted(gold.values()).count("sports") == 6
    bad = cli("split", "-p", str(directory), "train=0.2")
    assert bad.returncode != 0 and "unknown split" in bad.stderr


# -- rounds that cost milliseconds ------------------------------------------------------------------------------------


def test_a_run_uses_one_blas_thread_unless_told(bbc: Path, monkeypatch: pytest.MonkeyPatch):
    seen: list[int] = []
    student_cls = get_plugins().get("student", "logreg").cls
    original = student_cls.fit

    def recording_fit(self, *args, **kwargs):
        seen.append(max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"))
        return original(self, *args, **kwargs)

    default = max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
    monkeypatch.setattr(student_cls, "fit", recording_fit)
    with Project.open(bbc) as project:
        project.distill(_config(budget_labels=20))
        assert set(seen) == {1}
        seen.clear()
        monkeypatch.setenv("KDSTUDIO_THREADS", "2")
        project.distill(_config(budget_labels=20, seed=1))
    assert set(seen) == {min(2, default)}
    monkeypatch.setenv("KDSTUDIO_THREADS", "many")
    with pytest.raises(KdError, match="KDSTUDIO_THREADS"), sized_pools():
        pass


def test_a_local_teachers_batch_is_written_in_one_transaction(bbc: Path, monkeypatch: pytest.MonkeyPatch):
    outer = {"n": 0}
    original = Store.transaction

    def counting(self):
        if not self._open_transactions:
            outer["n"] += 1
        return original(self)

    monkeypatch.setattr(Store, "transaction", counting)
    with Project.open(bbc) as project:
        before = outer["n"]
        result = project.distill(_config(budget_labels=20, val_limit=20))
        commits = outer["n"] - before
    # 20 training answers and the validation ones: one commit per batch, not one per answer.
    assert result.calls >= 40 and commits < 25, commits


def test_a_grouped_transaction_rolls_back_as_one(tmp_path: Path):
    store = Store.create(tmp_path / "s.duckdb")
    store.con.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(RuntimeError), store.transaction():
        with store.transaction() as con:
            con.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("after the inner one")
    assert store.con.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    with store.transaction(), store.transaction() as con:
        con.execute("INSERT INTO t VALUES (2)")
    assert store.con.execute("SELECT count(*) FROM t").fetchone()[0] == 1
    store.close()


def test_distill_shows_embedding_before_the_run(tmp_path: Path):
    project, _ = Project.from_dataset("bbc-news", tmp_path / "raw", limit=60, seed=2)
    with project:  # the test encoder becomes the project's, with nothing embedded yet
        project.config.embedding.encoder = TEST_ENCODER
        project.config.save(project.directory)
    done = cli("distill", "-p", str(tmp_path / "raw"), "--teacher", "oracle", "--budget-labels", "20",
                   "--seed-size", "10", "--batch", "10")
    assert done.returncode == 0, done.stderr
    assert "embedded 60 documents" in done.stderr


# -- the zero-shot teacher knows when it is guessing ------------------------------------------------------------------


def _project_with_labels(tmp_path: Path, embedded: Path, names: dict[str, str], descriptions: bool) -> Path:
    """The bbc slice again, its labels renamed (and described, or not), with the slice's own MiniLM vectors (the same
    texts under the same ids: embedding them again would compute the same numbers)."""
    with Project.open(embedded, read_only=True) as source:
        ids = source.store.ids_in_split("pool") + source.store.ids_in_split("test")
        texts, gold = source.store.texts(ids), source.store.gold(ids)
        labels = source.config.labels
        vector_ids, vectors = source.store.embedding_matrix(source.vector_key)
        key = source.vector_key
    data = tmp_path / "renamed.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])
        writer.writerows([d, t, names[gold[d]]] for d, t in zip(ids, texts, strict=True))
    spec = tmp_path / "labels.json"
    spec.write_text(json.dumps([{"name": names[x.name], "description": x.description if descriptions else ""}
                                for x in labels]), encoding="utf-8")
    directory = tmp_path / ("described" if descriptions else "bare")
    assert run_cli("init", str(directory), "--labels-file", str(spec)).returncode == 0
    assert run_cli("import", str(data), "-p", str(directory), "--id-column", "id", "--label-column", "label",
                   "--split", "val=0.2,test=0.2").returncode == 0
    with Project.open(directory) as project:
        wanted = set(ids)
        rows = [i for i, d in enumerate(vector_ids) if d in wanted]
        project.store.save_embeddings(key, [vector_ids[i] for i in rows], vectors[rows])
    return directory


def test_zero_shot_teacher_says_it_is_guessing_before_buying(minilm_slice: Path, tmp_path: Path):
    names = {"business": "kq", "entertainment": "zv", "politics": "wx", "sports": "jy", "tech": "pf"}
    bare = _project_with_labels(tmp_path, minilm_slice, names, descriptions=False)
    refused = run_cli("distill", "-p", str(bare), "--budget-labels", "20", "--seed-size", "10", "--batch", "10")
    assert refused.returncode == 1, refused.stderr
    assert "no label has a description" in refused.stderr and "it is guessing" in refused.stderr
    assert "teacher check: zeroshot" in refused.stdout and "gold labels" in refused.stdout
    # Refused before the first round: one Error line, the fix names descriptions, another teacher, people, the flag.
    errors = [line for line in refused.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "cannot be told from guessing" in errors[0], refused.stderr
    assert "description" in refused.stderr and "--accept-guessing-teacher" in refused.stderr
    assert "round   0" not in refused.stdout
    with Project.open(bare, read_only=True) as project:
        assert project.runs()[-1].status == "failed" and not project.store.label_counts_by_source()
    # Insisting buys anyway, with the warnings said before the first round.
    done = cli("distill", "-p", str(bare), "--budget-labels", "20", "--seed-size", "10", "--batch", "10",
               "--accept-guessing-teacher")
    assert done.returncode == 0, done.stderr
    assert "it is guessing" in done.stderr
    assert done.stdout.index("teacher check") < done.stdout.index("round   0")


def test_zero_shot_teacher_with_descriptions_is_not_called_a_guesser(minilm_slice: Path, tmp_path: Path):
    names = {x: x for x in ("business", "entertainment", "politics", "sports", "tech")}
    described = _project_with_labels(tmp_path, minilm_slice, names, descriptions=True)
    done = run_cli("distill", "-p", str(described), "--budget-labels", "20", "--seed-size", "10", "--batch", "10")
    assert done.returncode == 0, done.stderr
    assert "guessing" not in done.stderr and "no label has a description" not in done.stderr
    agreement = float(done.stdout.split("agrees with ")[1].split()[0])
    assert agreement > 0.6
