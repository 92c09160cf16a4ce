"""The check sample (issue 28): a few documents people label grade the student and its teacher with intervals that
hold the truth, PPI tightens them without losing that, and a teacher no better than a guess sells nothing. The
estimators on synthetic populations whose truth is known; the rest on a bbc-news slice on the test encoder, where gold
labels stand in for people until a person labels a document."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import as_before_vector_shards, cheap_slice, cli, fresh_copy
from sklearn.metrics import f1_score

from kdstudio.check import THIN, TOO_NARROW, CheckTruth, grade, teacher_belief
from kdstudio.estimates import Proxy, bootstrap_macro_f1, macro_f1, macro_f1_resamples, ppi_mean, wilson
from kdstudio.loop import DistillConfig
from kdstudio.project import Project
from kdstudio.store import Ledger, RunLabel
from kdstudio.store import schema as schema_module

# -- the estimators, on populations whose truth is known ---------------------------------------------------------


def population(rng: np.random.Generator, size: int, student: float, teacher: float) -> tuple[np.ndarray, np.ndarray]:
    """Per document of a population: whether the student is right, and whether it agrees with a teacher that is
    right with probability `teacher` (a wrong teacher disagrees with a right student; with a wrong student it agrees
    one time in four)."""
    right = rng.random(size) < student
    teacher_right = rng.random(size) < teacher
    agrees = np.where(teacher_right, right, ~right & (rng.random(size) < 0.25))
    return right, agrees


@pytest.mark.parametrize("teacher", [0.9, 0.5])
def test_intervals_hold_the_true_accuracy_and_ppi_is_narrower_where_the_teacher_is_good(teacher: float):
    rng = np.random.default_rng(7)
    right, agrees = population(rng, 50_000, 0.8, teacher)
    truth = right.mean()
    sample_hits = ppi_hits = 0
    sample_width, ppi_width = [], []
    draws = 400
    for _ in range(draws):
        checked = rng.choice(len(right), 100, replace=False)
        other = rng.choice(len(right), 2000, replace=False)
        alone = wilson(int(right[checked].sum()), 100, "gold")
        ppi = ppi_mean(right[checked], [Proxy.of("teacher", agrees[checked], agrees[other])], "gold")
        sample_hits += alone.covers(truth)
        ppi_hits += ppi.covers(truth)
        sample_width.append(alone.width)
        ppi_width.append(ppi.width)
    # 95% intervals: at least 93% of draws hold the truth (400 draws: a standard error of about 1.1 points).
    assert sample_hits / draws >= 0.93 and ppi_hits / draws >= 0.93, (sample_hits, ppi_hits)
    narrower = 1 - np.mean(ppi_width) / np.mean(sample_width)
    if teacher == 0.9:
        assert narrower >= 0.25, narrower
    else:  # a poor teacher buys little, and never much of a wider interval
        assert narrower > -0.05, narrower


def test_the_teachers_belief_in_the_students_answer_is_a_better_proxy_than_agreement_and_stays_valid():
    """A teacher right 0.8 of the time whose confidence tells right from wrong with an AUROC near 0.87 (the zero-shot
    teacher's is 0.82 on bbc-news): PPI on its belief in the student's answer holds the truth and is narrower than PPI
    on agreement alone (by about 4% here; with an AUROC near 0.75, about 1%)."""
    rng = np.random.default_rng(11)
    labels, size = ["a", "b", "c"], 20_000
    y = rng.integers(0, 3, size)
    student = np.where(rng.random(size) < 0.75, y, rng.integers(0, 3, size))
    teacher_right = rng.random(size) < 0.8
    said = np.where(teacher_right, y, (y + rng.integers(1, 3, size)) % 3)
    sure = np.clip(np.where(teacher_right, 0.8, 0.55) + rng.normal(0, 0.15, size), 0.34, 0.99)
    answers = [RunLabel(str(i), labels[said[i]], "teacher", float(sure[i]), None) for i in range(size)]
    belief = np.array([teacher_belief(a, labels[s], 3) for a, s in zip(answers, student, strict=True)])
    agrees, right = (student == said).astype(float), student == y
    hits = {"belief": 0, "agreement": 0}
    widths: dict[str, list[float]] = {"belief": [], "agreement": []}
    draws = 300
    for _ in range(draws):
        chosen = rng.choice(size, 1100, replace=False)
        checked, other = chosen[:100], chosen[100:]
        for name, proxy in (("belief", belief), ("agreement", agrees)):
            estimate = ppi_mean(right[checked], [Proxy.of(name, proxy[checked], proxy[other])], "gold")
            hits[name] += estimate.covers(right.mean())
            widths[name].append(estimate.width)
    assert min(hits.values()) / draws >= 0.92, hits  # 300 draws: a standard error of about 1.3 points
    assert np.mean(widths["belief"]) < 0.97 * np.mean(widths["agreement"]), widths


def test_the_students_own_confidence_on_many_unchecked_documents_narrows_ppi_further_and_stays_valid():
    """Two proxies on sets of their own: the teacher's belief on the 200 documents it answered (weak, like an LLM's)
    and the student's confidence on 3,000 others (free to compute). Together they hold the truth and give a narrower
    interval than the teacher's alone; near a share of 0.95, where the normal interval is too narrow, Wilson's at the
    effective size still holds it."""
    rng = np.random.default_rng(13)
    for accuracy in (0.8, 0.95):
        size = 30_000
        right = rng.random(size) < accuracy
        belief = np.clip(0.55 + 0.2 * right + rng.normal(0, 0.2, size), 0, 1)
        confidence = np.clip(0.55 + 0.25 * right + rng.normal(0, 0.15, size), 0.34, 1)
        hits = {"teacher": 0, "both": 0}
        widths: dict[str, list[float]] = {"teacher": [], "both": []}
        draws = 300
        for _ in range(draws):
            chosen = rng.choice(size, 3300, replace=False)
            checked, answered, others = chosen[:100], chosen[100:300], chosen[300:]
            teacher = Proxy.of("teacher", belief[checked], belief[answered])
            student = Proxy.of("student", confidence[checked], confidence[others])
            for name, proxies in (("teacher", [teacher]), ("both", [teacher, student])):
                estimate = ppi_mean(right[checked], proxies, "gold")
                hits[name] += estimate.covers(right.mean())
                widths[name].append(estimate.width)
        assert min(hits.values()) / draws >= 0.92, (accuracy, hits)  # 300 draws: a standard error of 1.3 points
        assert np.mean(widths["both"]) < 0.95 * np.mean(widths["teacher"]), (accuracy, widths)


def test_grading_borrows_the_teachers_belief_where_it_answered_and_the_students_confidence_elsewhere():
    labels = ["a", "b", "c"]
    rng = np.random.default_rng(17)
    checked = [f"c{i:03d}" for i in range(120)]
    val = [f"v{i:03d}" for i in range(50)]
    others = [f"o{i:03d}" for i in range(500)]
    gold = {d: labels[rng.integers(0, 3)] for d in checked}
    student = {d: rng.dirichlet([4, 1, 1]) for d in checked + val + others}
    teacher = {d: RunLabel(d, labels[int(rng.integers(0, 3))], "teacher", float(rng.uniform(0.4, 1)), None)
               for d in checked + val}
    truth = CheckTruth.of(checked, {}, gold)
    both = grade(labels, truth, student, teacher, val + others)
    assert both is not None and both.student_ppi is not None
    assert "teacher λ" in both.student_ppi.method and "student λ" in both.student_ppi.method
    assert both.student_ppi.n_proxy == 550
    # The teacher missed a checked document: its belief is left out, and the student's confidence is still never
    # borrowed on the documents the run validated on (it chose its student by them).
    del teacher[checked[0]]
    alone = grade(labels, truth, student, teacher, val + others)
    assert alone is not None and alone.student_ppi is not None
    assert "teacher λ" not in alone.student_ppi.method and alone.student_ppi.n_proxy == 500
    assert grade(labels, truth, student, teacher).student_ppi is None  # nothing borrowed: the sample alone


def test_the_teachers_belief_reads_probabilities_then_confidence_then_agreement_and_survives_garbage():
    def said(confidence: float | None = None, probs: dict[str, float] | None = None) -> RunLabel:
        return RunLabel("d", "a", "teacher", confidence, probs)

    assert teacher_belief(said(0.9, {"a": 2.0, "b": 1.0, "c": 1.0}), "b", 3) == pytest.approx(0.25)
    assert teacher_belief(said(0.9, {"a": 0.9, "b": -5.0}), "c", 3) == 0.0  # a label it gave no probability
    assert teacher_belief(said(0.7), "a", 3) == pytest.approx(0.7)
    assert teacher_belief(said(0.7), "c", 3) == pytest.approx(0.15)
    assert teacher_belief(said(), "a", 3) == 1.0 and teacher_belief(said(), "b", 3) == 0.0
    for broken in (said(1.7), said(float("nan")), said(None, {"a": 0.0, "b": 0.0})):
        assert teacher_belief(broken, "a", 3) == 1.0 and teacher_belief(broken, "b", 3) == 0.0


def test_wilson_is_honest_at_the_edges_and_ppi_with_an_unrelated_proxy_falls_back_to_the_sample():
    none = wilson(0, 30, "people")
    assert none.value == 0 and none.low == 0 and 0.1 < none.high < 0.13
    every = wilson(30, 30, "people")
    assert every.high == pytest.approx(1) and 0.87 < every.low < 0.9
    rng = np.random.default_rng(3)
    y = rng.random(200) < 0.7
    unrelated = ppi_mean(y, [Proxy.of("coin", rng.random(200) < 0.5, rng.random(5000) < 0.5)], "people")
    assert unrelated.width <= wilson(int(y.sum()), 200, "x").width * 1.1 and unrelated.n_proxy == 5000
    assert unrelated.covers(0.7) and "coin λ" in unrelated.method
    with pytest.raises(ValueError):  # a proxy that never varies has nothing to say
        ppi_mean(y, [Proxy.of("constant", np.ones(200), np.ones(5000))], "people")
    with pytest.raises(ValueError):
        wilson(0, 0, "people")


def test_macro_f1_is_scikit_learns_and_its_bootstrap_interval_holds_it():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.7, y, rng.integers(0, 4, 300))
    assert macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro"))
    estimate = bootstrap_macro_f1(y, pred, "gold", reps=300)
    assert estimate.low < estimate.value < estimate.high and estimate.width < 0.2
    draws = np.random.default_rng(3).integers(0, 300, size=(40, 300))
    assert macro_f1_resamples(y, pred, 40, seed=3) == pytest.approx([macro_f1(y[d], pred[d]) for d in draws])


def test_the_bias_corrected_macro_f1_interval_holds_the_truth_where_the_percentile_one_did_not():
    """20 labels, 100 checked documents, so about five a label: the sample's macro F1 reads low, and the plain
    percentile interval around it missed the population's macro F1 in about one draw of five
    (benchmarks/f1_interval.py)."""
    rng = np.random.default_rng(11)
    gold = rng.integers(0, 20, 20_000)
    answer = np.where(rng.random(20_000) < 0.6, gold, (gold + rng.integers(1, 20, 20_000)) % 20)
    truth = macro_f1(gold, answer)
    held = {"percentile": 0, "bias-corrected": 0}
    for i in range(150):
        drawn = rng.choice(20_000, 100, replace=False)
        shipped = bootstrap_macro_f1(gold[drawn], answer[drawn], "gold", reps=400, seed=i)
        low, high = np.quantile(macro_f1_resamples(gold[drawn], answer[drawn], 400, seed=i), [0.025, 0.975])
        held["percentile"] += low <= truth <= high
        held["bias-corrected"] += shipped.covers(truth)
    assert held["bias-corrected"] >= 0.85 * 150 and held["bias-corrected"] >= held["percentile"] + 0.05 * 150


def test_macro_f1_says_when_some_label_has_too_few_checked_documents():
    labels = ["a", "b", "c"]
    ids = [f"d{i}" for i in range(30)]
    student = {d: np.array([0.6, 0.3, 0.1]) for d in ids}
    thin = grade(labels, CheckTruth.of(ids, {d: "ab"[i % 2] for i, d in enumerate(ids)}, {}), student, {})
    assert thin is not None and thin.student_macro_f1.method == (
        f"sample (bias-corrected bootstrap); 1 of 3 labels have fewer than {THIN} checked documents, {TOO_NARROW}")
    assert thin.student_accuracy.method == "sample (Wilson)"  # accuracy's interval needs no documents a label
    enough = grade(labels, CheckTruth.of(ids, {d: "abc"[i % 3] for i, d in enumerate(ids)}, {}), student, {})
    assert enough is not None and enough.student_macro_f1.method == "sample (bias-corrected bootstrap)"


def test_macro_f1_right_on_every_checked_document_says_its_interval_is_no_certainty():
    labels = ["a", "b", "c"]
    ids = [f"d{i}" for i in range(30)]
    said = {d: "abc"[i % 3] for i, d in enumerate(ids)}
    student = {d: np.eye(3)[labels.index(said[d])] for d in ids}
    perfect = grade(labels, CheckTruth.of(ids, said, {}), student, {})
    assert perfect is not None
    f1 = perfect.student_macro_f1
    assert (f1.value, f1.low, f1.high) == (1.0, 1.0, 1.0)
    assert f1.method == (f"sample (bias-corrected bootstrap); every resample of the checked documents gives the same "
                         f"figure, {TOO_NARROW}")
    assert perfect.student_accuracy.low < 0.9  # Wilson's interval stays honest: 30 of 30 is not certainty


def test_a_runs_summary_names_the_truth_its_figure_rests_on_and_never_prints_nan():
    from kdstudio.render import measured_text

    labels = ["a", "b"]
    ids = [f"d{i}" for i in range(40)]
    said = {d: "ab"[i % 2] for i, d in enumerate(ids)}
    student = {d: np.array([0.9, 0.1]) if i % 4 else np.array([0.2, 0.8]) for i, d in enumerate(ids)}
    check = grade(labels, CheckTruth.of(ids, said, {}), student, {})
    assert check is not None
    val = {"accuracy": 0.91, "macro_f1": 0.9}
    assert measured_text({"test": {"accuracy": 0.8}, "val": val}) == "test accuracy 0.800"
    on_check = measured_text({"check": check.as_dict(), "val": val})
    assert on_check.startswith("accuracy on the check sample (people) 0.250 [") and "0.91" not in on_check
    unknown = measured_text({"val": val})
    assert unknown.startswith("agreement with the teacher (val) 0.910, not accuracy: nothing gold or checked")
    assert "kdstudio check -p DIR --size 100" in unknown
    assert "nan" not in measured_text({}) + unknown + on_check


def test_grades_need_ten_checked_labels_and_say_which_truth_they_rest_on():
    labels = ["a", "b"]
    truth = CheckTruth.of([f"d{i}" for i in range(12)], {"d0": "a", "d1": "b"}, {f"d{i}": "a" for i in range(12)})
    assert (truth.by_people, truth.by_gold, truth.kind) == (2, 10, "people and gold")
    assert truth.labels["d1"] == "b"  # a person's label over gold
    student = {f"d{i}": np.array([0.9, 0.1]) for i in range(12)}  # it answers "a" everywhere
    graded = grade(labels, truth, student, {})
    assert graded is not None and graded.n == 12 and graded.student_ppi is None and graded.teacher_accuracy is None
    assert graded.student_accuracy.value == pytest.approx(11 / 12) and graded.baseline == pytest.approx(11 / 12)
    few = CheckTruth.of(["d0", "d1"], {"d0": "a"}, {})
    assert grade(labels, few, student, {}) is None


# -- the check sample in a project --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sliced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cheap_slice(tmp_path_factory.mktemp("check") / "bbc", limit=300, seed=11)


@pytest.fixture
def bbc(sliced: Path, tmp_path: Path) -> Path:
    return fresh_copy(sliced, tmp_path)


def test_the_check_sample_leaves_the_pool_grows_never_shrinks_and_no_run_touches_it(bbc: Path):
    with Project.open(bbc) as project:
        pool = set(project.store.ids_in_split("pool"))
        first = project.draw_check(40, seed=1)
        assert (first.drawn, first.size) == (40, 40)
        drawn = set(project.store.ids_in_split("check"))
        assert len(drawn) == 40 and drawn <= pool and not drawn & set(project.store.ids_in_split("pool"))
        assert project.draw_check(30).drawn == 0  # it never shrinks
        assert project.draw_check(60, seed=1).drawn == 20 and drawn <= set(project.store.ids_in_split("check"))
        checked = set(project.store.ids_in_split("check"))
        result = project.distill(DistillConfig(teacher="oracle", seed_size=20, batch=20, budget_labels=10_000))
        assert result.stop_reason.startswith("the pool is exhausted")
        rounds = [r for r in project.rounds(result.run_id) if r.phase == "done"]
        selected = {s["id"] for r in rounds for s in (r.selected or [])}
        assert selected and not selected & checked  # never selected...
        so_far = np.cumsum([len(r.selected or []) for r in rounds])
        assert [r.n_labels for r in rounds] == list(so_far)  # ...and never trained on
        assert project.status().check == {"size": 60, "checked": 60, "by_people": 0, "by_gold": 60}


def test_a_sample_grown_after_a_run_says_how_much_of_the_pool_it_could_not_draw(bbc: Path):
    with Project.open(bbc) as project:
        first = project.draw_check(20, seed=2)
        assert first.lean() is None and first.touched == 0  # before any run: nothing leans
        before = set(project.store.ids_in_split("check"))
        project.distill(DistillConfig(teacher="oracle", seed_size=20, batch=20, budget_labels=40))
        later = project.draw_check(40, seed=2)
        touched = project.store.touched_pool_count()
        assert later.drawn == 20 and later.touched == touched >= 40
        assert later.pool == touched + len(project.store.untouched_pool()) + 20
        assert later.lean() is not None and f"{touched:,} of the pool's" in later.lean() and "read high" in later.lean()
        grown = set(project.store.ids_in_split("check")) - before
        assert len(grown) == 20 and not grown & set(Ledger(project.store).current_labels())  # untouched, as promised


def test_a_sample_drawn_after_the_run_says_why_the_teacher_and_ppi_are_not_graded(bbc: Path):
    """The run asked its teacher about no checked document (there were none when it started), and 30 checked
    documents are too few for PPI: `kdstudio check` says both, with what brings them, instead of leaving rows out."""
    with Project.open(bbc) as project:
        run = project.distill(DistillConfig(teacher="oracle", seed_size=20, batch=20, budget_labels=40)).run_id
    assert cli("check", "-p", str(bbc), "--size", "30").returncode == 0
    shown = cli("check", "-p", str(bbc))
    assert shown.returncode == 0, shown.stderr
    said = " ".join(shown.stdout.split())
    assert "student accuracy" in said and "teacher accuracy (" not in said
    assert f"No teacher accuracy: run {run}'s teacher answered 0 of the 30 checked documents (10 needed)" in said
    assert "No PPI estimate: it is given from 100 checked documents (70 more)" in said
    grades = json.loads(cli("check", "-p", str(bbc), "--json").stdout)["grades"]
    assert grades["teacher_accuracy"] is None and grades["teacher_judged"] == 0
    assert grades["student_accuracy_ppi"] is None


def test_a_check_larger_than_the_untouched_pool_is_one_line_and_draws_nothing(bbc: Path):
    result = cli("check", "-p", str(bbc), "--size", "100000")
    assert result.returncode == 1 and result.stderr.count("Error:") == 1, result.stderr
    assert "untouched" in result.stderr and "Fix:" in result.stderr
    with Project.open(bbc) as project:
        assert project.store.ids_in_split("check") == []


def test_a_run_grades_its_students_on_the_check_sample_and_the_command_shows_the_intervals(bbc: Path):
    drawn = cli("check", "-p", str(bbc), "--size", "100")
    assert drawn.returncode == 0, drawn.stderr
    assert "drew 100 documents" in drawn.stderr and "no kept student" in drawn.stdout.lower()
    assert "note:" not in drawn.stderr  # drawn before any run: no lean to warn of
    plan = cli("distill", "-p", str(bbc), "--teacher", "oracle", "--budget-labels", "60", "--plan")
    assert plan.returncode == 0 and "+ 100 check sample" in plan.stdout, plan.stdout + plan.stderr  # said, and paid
    run = cli("distill", "-p", str(bbc), "--teacher", "oracle", "--budget-labels", "60", "--seed-size", "20",
              "--batch", "20")
    assert run.returncode == 0, run.stderr
    # Every round line names its truths; the check sample's estimate comes with its interval.
    assert "agree w/ teacher (val)" in run.stdout and "val acc" not in run.stdout
    assert "check acc (gold)" in run.stdout and "[0." in run.stdout
    shown = cli("check", "-p", str(bbc))
    assert shown.returncode == 0, shown.stderr
    assert "student accuracy" in shown.stdout and "95% interval" in shown.stdout and "100 gold labels" in shown.stdout
    assert "PPI" in shown.stdout and "teacher accuracy" in shown.stdout
    document = json.loads(cli("check", "-p", str(bbc), "--json").stdout)
    grades = document["grades"]
    assert document["sample"] == {"size": 100, "checked": 100, "by_people": 0, "by_gold": 100}
    assert grades["teacher_accuracy"]["value"] == 1.0  # the simulated teacher answers from gold
    assert grades["teacher_judged"] == 100  # the run asked it about every checked document when it started
    a = grades["student_accuracy"]
    assert a["low"] <= a["value"] <= a["high"] and a["truth"] == "gold" and a["n"] == 100
    assert grades["student_accuracy_ppi"]["n_proxy"] > 0
    with Project.open(bbc) as project:
        rounds = project.rounds(project.runs()[-1].id)
        assert all(r.metrics["check"]["n"] == 100 for r in rounds if r.phase == "done")


def test_people_label_the_check_sample_blind_and_their_labels_become_its_truth(bbc: Path):
    with Project.open(bbc) as project:
        project.draw_check(30)
        queue = project.triage_queue("check")
        assert len(queue) == 30 and all(x.teacher_label is None and x.student_label is None for x in queue)
        preview = project.review_preview(filter="check")
        assert [x.doc_id for x in preview] == [x.doc_id for x in queue] and all(x.label is None for x in preview)
        gold = project.store.gold([x.doc_id for x in queue])
        for item in queue[:12]:
            project.set_label(item.doc_id, gold[item.doc_id], annotator="ana")
        assert len(project.triage_queue("check")) == 18  # labelled ones leave the queue
        sample = project.status().check
        assert (sample["by_people"], sample["by_gold"]) == (12, 18)
        assert Ledger(project.store).human_labelled()  # and a run never trains on them:
        result = project.distill(DistillConfig(teacher="oracle", seed_size=10, batch=10, budget_labels=20))
        rounds = project.rounds(result.run_id)
        bought = {s["id"] for r in rounds for s in r.selected}
        assert rounds[-1].n_labels == 20 and not bought & set(project.store.ids_in_split("check"))
        _, record = project.load_student()
        assert record["metrics"]["check"]["truth"] == "people and gold"
    listed = cli("review", "push", "-p", str(bbc), "--filter", "check", "--preview")
    assert listed.returncode == 0 and listed.stdout.count("\t-\t") == 18, listed.stdout
    assert result.status == "finished"


def test_a_teacher_no_better_than_a_guess_sells_nothing_unless_the_user_insists(bbc: Path):
    with Project.open(bbc) as project:
        project.draw_check(60)
    guesser = ["distill", "-p", str(bbc), "--teacher", "oracle", "--teacher-option", "noise=0.9",
               "--budget-labels", "40", "--seed-size", "20", "--batch", "20"]
    refused = cli(*guesser)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "cannot be told from guessing" in errors[0], refused.stderr
    assert "--accept-guessing-teacher" in refused.stderr and "round   0" not in refused.stdout
    assert refused.stderr.count("Fix:") == 1, refused.stderr
    with Project.open(bbc) as project:
        run = project.runs()[-1]
        assert run.status == "failed"
        bought = project.store.con.execute(
            "SELECT count(*) FROM labels l JOIN documents d ON d.id = l.doc_id WHERE d.split = 'pool'").fetchone()[0]
        assert bought == 0 and not project.rounds(run.id)  # no training label bought, no round
    insisted = cli(*guesser, "--accept-guessing-teacher")
    assert insisted.returncode == 0, insisted.stderr
    assert "check acc (gold)" in insisted.stdout


def test_a_project_made_before_the_check_split_opens_and_takes_one(bbc: Path):
    as_before_vector_shards(bbc)
    with Project.open(bbc) as project:
        con = project.store.con
        before = con.execute("SELECT count(*), count(DISTINCT split) FROM documents").fetchone()
        con.execute("DELETE FROM schema_version WHERE version = 5")
        # The old table, as migration 4 left it: 'check' not an allowed split.
        con.execute("DROP INDEX documents_text_hash")
        con.execute("ALTER TABLE documents RENAME TO documents_new")
        con.execute("CREATE TABLE documents AS SELECT * FROM documents_new")
        con.execute("DROP TABLE documents_new")
        con.execute("CREATE UNIQUE INDEX documents_text_hash ON documents (text_hash)")
    with Project.open(bbc) as project:
        assert project.store.schema_version() == schema_module.LATEST_VERSION
        assert project.store.con.execute("SELECT count(*), count(DISTINCT split) FROM documents").fetchone() == before
        assert project.draw_check(10).size == 10


@pytest.mark.asyncio
async def test_the_dashboard_shows_the_estimate_and_triage_orders_the_check_sample_blind(bbc: Path):
    from kdstudio.tui.app import KdStudioApp

    with Project.open(bbc) as project:
        project.draw_check(40)
        project.distill(DistillConfig(teacher="oracle", seed_size=20, batch=20, budget_labels=40))
        app = KdStudioApp(project)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            stats = " ".join(str(app.query_one("#dashboard-stats").render()).split())
            assert "student accuracy on the check sample (gold, 40 labels): 0." in stats and "95%" in stats, stats
            await pilot.press("f4")
            await pilot.pause()
            triage = app.query_one("#triage-pane")
            while triage.order != "check":
                await pilot.press("o")
                await pilot.pause()
            info = " ".join(str(app.query_one("#triage-info").render()).split())
            assert "check sample: label it blind" in info and "student: hidden" in info, info
            assert len(triage.queue) == 40


def test_the_teachers_answers_on_the_check_sample_are_never_offered_for_review(bbc: Path):
    with Project.open(bbc) as project:
        project.draw_check(30)
        checked = set(project.store.ids_in_split("check"))
        project.distill(DistillConfig(teacher="oracle", seed_size=10, batch=10, budget_labels=20))
        asked = set(project.store.con.execute(
            "SELECT doc_id FROM labels WHERE source = 'teacher' AND doc_id IN (SELECT unnest(?))",
            [sorted(checked)]).fetchall())
        assert len(asked) == 30  # the run asked its teacher about them, to grade it...
        offered = {x.doc_id for x in project.review_preview(filter="all")} | {
            x.doc_id for x in project.triage_queue("uncertainty")}
        assert offered and not offered & checked  # ...and no person sees those answers beside the document


def test_the_model_card_names_agreement_as_such_and_shows_the_checked_estimate():
    from kdstudio.modelcard import limitations, metrics

    labels = ["a", "b"]
    truth = CheckTruth.of([f"d{i}" for i in range(20)], {f"d{i}": "a" for i in range(20)}, {})
    graded = grade(labels, truth, {f"d{i}": np.array([0.8, 0.2] if i % 5 else [0.3, 0.7]) for i in range(20)}, {})
    assert graded is not None
    facts = {"labels": labels, "model": {}, "run": {}, "parity": None,
             "student": {"metrics": {"val": {"accuracy": 0.95, "macro_f1": 0.9}, "check": graded.as_dict()}}}
    card = "\n".join(metrics(facts) + limitations(facts))
    assert "agreement with the teacher's labels (not accuracy) | 0.950" in card
    assert "check sample (people's labels, 20 documents drawn at random, 95% intervals) | 0.800 [" in card
    assert "estimated on 20 documents drawn at random with people's labels" in card
    # Every checked label is "a": "b" has none, so macro F1's interval is said to be perhaps too narrow.
    assert "Macro F1 on the check sample: " in card and f"1 of 2 labels have fewer than {THIN} checked" in card
    unchecked = "\n".join(limitations({**facts, "student": {"metrics": {"val": {"accuracy": 0.95}}}}))
    assert "its accuracy is unknown" in unchecked and "kdstudio check" in unchecked
