"""Budgets that cut a run short store nothing that the teacher's rule never reached, and a run that has nothing left
to buy ends: committees and cascades cut mid-batch over HTTP, resumed with more budget; a pool that people and the
teacher have used up, for every selector."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import cheap_slice, cli, fresh_copy
from fake_llm_server import FakeLLM

from kdstudio.loop import DistillConfig
from kdstudio.plugins import get_plugins
from kdstudio.project import Project

MODELS = {"fake-a": {"error_rate": 0.3, "right": 0.9, "wrong": 0.6},
          "fake-b": {"error_rate": 0.0, "right": 0.95}}
SMALL = ["--seed-size", "10", "--batch", "10", "--budget-labels", "30", "--val-size", "20"]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cheap_slice(tmp_path_factory.mktemp("cuts") / "bbc", limit=200, seed=5)


@pytest.fixture
def bbc(embedded: Path, tmp_path: Path) -> Path:
    return fresh_copy(embedded, tmp_path)


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory):
    with FakeLLM(tmp_path_factory.mktemp("cuts-llm")) as server:
        yield server


def answer_gold(llm: FakeLLM, directory: Path, **config) -> None:
    with Project.open(directory) as project:
        gold = project.store.gold()
        texts = project.store.texts(list(gold))
    llm.configure(lookup={t.strip(): gold[d] for d, t in zip(gold, texts, strict=True)}, models=MODELS, **config)


def member(llm: FakeLLM, model: str, price: float) -> str:
    return f"llm model=openai/{model} api_base={llm.api_base} price_in={price} price_out={price} backoff=0.05"


def verdicts(directory: Path) -> list[tuple[str, str, str, dict]]:
    """(document, split, label, the verdict's record) of every teacher label stored from a composite's verdict."""
    with Project.open(directory, read_only=True) as project:
        rows = project.store.con.execute(
            "SELECT l.doc_id, d.split, l.label, c.response FROM labels l JOIN teacher_calls c ON c.id = "
            "l.teacher_call_id JOIN documents d ON d.id = l.doc_id WHERE l.source = 'teacher' AND c.purpose = "
            "'verdict'").fetchall()
    return [(d, split, label, json.loads(response)) for d, split, label, response in rows]


def sent(llm: FakeLLM) -> Counter:
    """How many times each (model, document) pair was sent."""
    return Counter((r["model"], r["document"]) for r in llm.requests())


@pytest.mark.slow
def test_a_committee_cut_by_the_budget_stores_no_verdict_it_did_not_reach(bbc: Path, llm: FakeLLM):
    answer_gold(llm, bbc)
    args = ["distill", "-p", str(bbc), "--teacher", "committee", "--teacher-option",
            f"members={member(llm, 'fake-a', 10)}; {member(llm, 'fake-b', 10)}", *SMALL]
    cut = cli(*args, "--budget-usd", "0.15")
    assert cut.exception is None and "USD budget" in cut.stdout + cut.stderr, (cut.stdout, cut.stderr)
    stored = verdicts(bbc)
    n_val = 20  # --val-size
    assert 0 < len([v for v in stored if v[1] == "val"]) < n_val  # the cap cut the validation batch
    assert all(len(record["votes"]) == 2 for *_, record in stored), stored  # never a verdict on one vote
    assert all(record["verdict"] == "agreed" or "disagreed" in record["verdict"] for *_, record in stored)
    resumed = cli("distill", "-p", str(bbc), "--resume", "--budget-usd", "1.5")
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    stored = verdicts(bbc)
    assert len({d for d, split, *_ in stored if split == "val"}) == n_val  # the resume completed every verdict
    assert all((len(record["votes"]) == 2 and None not in [v for _, v in record["votes"]]) or
               "disagreed" in record["verdict"] for *_, record in stored)
    assert max(sent(llm).values()) == 1  # what member A answered before the cut was reused, never asked twice


@pytest.mark.slow
def test_a_cascade_cut_by_the_budget_never_stores_the_unsure_first_answer(bbc: Path, llm: FakeLLM):
    answer_gold(llm, bbc)
    args = ["distill", "-p", str(bbc), "--teacher", "cascade", "--teacher-option", "first=zeroshot",
            "--teacher-option", f"then={member(llm, 'fake-b', 10)}", "--teacher-option", "below=0.5", *SMALL]
    cut = cli(*args, "--budget-usd", "0.05")  # a few of the second teacher's calls: fewer than the unsure answers
    assert cut.exception is None, cut.exception
    stored = verdicts(bbc)
    first = [(d, record) for d, _, _, record in stored if record["by"].startswith("zeroshot")]
    with Project.open(bbc, read_only=True) as project:
        confidences = dict(project.store.con.execute(
            "SELECT l.doc_id, l.confidence FROM labels l JOIN teacher_calls c ON c.id = l.teacher_call_id "
            "WHERE c.purpose = 'verdict'").fetchall())
        unsure_left = project.store.con.execute(
            "SELECT count(*) FROM teacher_calls WHERE model LIKE 'zeroshot%' AND confidence < 0.5").fetchall()[0][0]
    assert first and all(confidences[d] >= 0.5 for d, _ in first)  # the first teacher's word only where it was sure
    assert unsure_left > len([r for *_, r in stored if r["by"] == "openai/fake-b"])  # the cap cut the second
    resumed = cli("distill", "-p", str(bbc), "--resume", "--budget-usd", "3")
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    assert max(sent(llm).values()) == 1


# -- a pool with nothing left to buy ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cheap_slice(tmp_path_factory.mktemp("exhausted") / "cold", limit=100, seed=2,
                       split={"val": 0.1, "test": 0.2})


@pytest.mark.parametrize("selector", sorted(get_plugins().registered("selector")))
def test_a_run_whose_budget_outlasts_the_pool_ends_with_a_reason(small_pool: Path, tmp_path: Path, selector: str):
    with Project.open(fresh_copy(small_pool, tmp_path)) as project:
        pool = project.store.ids_in_split("pool")
        for doc_id, label in list(project.store.gold().items()):
            if doc_id in pool[:20]:
                project.set_label(doc_id, label, "tester")  # people took 20 pool documents in Triage
        result = project.distill(DistillConfig(teacher="oracle", selector=selector, seed_size=10, batch=10,
                                               budget_labels=200, val_limit=0))
    left = len(pool) - 20
    assert result.status == "finished" and result.stop_reason.startswith(
        f"the pool is exhausted: {left} bought, nothing left to ask"), result.stop_reason
    assert len(result.rounds) <= left // 10 + 2


# -- money said as it is ------------------------------------------------------------------------------------------


def llm_flags(llm: FakeLLM) -> list[str]:
    return ["--model", "openai/fake-model", "--api-base", llm.api_base, "--price-in", "1", "--price-out", "2",
            "--teacher-option", "backoff=0.05"]


@pytest.mark.slow
def test_cost_counts_every_request_retry_and_unusable_answer(bbc: Path, llm: FakeLLM):
    answer_gold(llm, bbc, faults=[{"kind": "429", "retry_after": 0, "times": 3},
                                  {"kind": "malformed", "times": 3}])
    result = cli("distill", "-p", str(bbc), *llm_flags(llm), *SMALL)
    assert result.returncode == 0, (result.stdout, result.stderr)
    seen = len(llm.requests())
    row = next(r for r in json.loads(cli("cost", "-p", str(bbc), "--json").stdout)["rows"]
               if r["model"] == "openai/fake-model")
    assert row["requests"] == seen == row["calls"] + 6  # every request the server saw is accounted for
    assert row["retries"] == {"rate limit (429)": 3} and row["unusable"] == 3 and row["unusable_usd"] > 0
    shown = cli("cost", "-p", str(bbc))
    assert "rate limit (429) 3" in shown.stdout and f"{seen}" in shown.stdout


@pytest.mark.slow
def test_a_run_never_spends_more_than_its_plan_says_at_most(bbc: Path, llm: FakeLLM):
    answer_gold(llm, bbc, usage_factor=1.6)  # a provider that bills more prompt tokens than litellm counts
    with Project.open(bbc) as project:
        config = project.distill_config({"teacher": "llm", "seed_size": 10, "batch": 10, "budget_labels": 30,
                                         "val_limit": 20, "teacher_options": {
                                             "model": "openai/fake-model", "api_base": llm.api_base, "price_in": "1",
                                             "price_out": "2", "backoff": "0.05"}})
        plan = project.plan(config)
        result = project.distill(config)
    assert result.cost_usd > plan.usd  # the estimate is an estimate
    assert result.cost_usd <= plan.bound_usd  # the bound is one
