"""Distillation with real teachers on a slice of bbc-news: the LLM teacher over HTTP (with PGKD generation,
cost, plan, cancel and resume) on the test encoder's vectors, and the offline zero-shot teacher on the real MiniLM's."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import cheap_slice, cli, fresh_copy, run_cli
from fake_llm_server import FakeLLM

from kdstudio.interfaces import Doc, TeachContext
from kdstudio.loop import DistillConfig
from kdstudio.plugins import get_plugins
from kdstudio.project import Project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cheap_slice(tmp_path_factory.mktemp("llm-loop") / "bbc", limit=160, seed=3)


@pytest.fixture
def bbc(embedded: Path, tmp_path: Path) -> Path:
    return fresh_copy(embedded, tmp_path)


@pytest.fixture
def real_bbc(minilm_slice: Path, tmp_path: Path) -> Path:
    """The zero-shot teacher works in the encoder's space: its tests need the real MiniLM's vectors."""
    return fresh_copy(minilm_slice, tmp_path)


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory):
    with FakeLLM(tmp_path_factory.mktemp("server")) as server:
        yield server


def answer_gold(llm: FakeLLM, directory: Path, **config) -> dict[str, str]:
    """The server answers like a perfect LLM: the gold label of each document."""
    with Project.open(directory) as project:
        gold = project.store.gold()
        texts = dict(zip(gold, project.store.texts(list(gold)), strict=True))
    llm.configure(lookup={texts[d].strip(): label for d, label in gold.items()}, confidence=0.9, **config)
    return texts


def llm_args(llm: FakeLLM) -> list[str]:
    return ["--model", "openai/fake-model", "--api-base", llm.api_base, "--price-in", "1", "--price-out", "2",
            "--teacher-option", "backoff=0.05"]


SMALL = ["--seed-size", "10", "--batch", "10", "--budget-labels", "30", "--val-limit", "20"]


def test_pgkd_generates_synthetic_training_samples_and_a_rerun_pays_nothing(bbc: Path, llm: FakeLLM):
    texts = answer_gold(llm, bbc)
    existing = next(iter(texts.values()))
    answer_gold(llm, bbc, generation_extra=[{"text": existing, "label": "business"},  # already in the corpus
                                            {"text": "a forecast of rain", "label": "weather"}])  # not a label
    first = cli("distill", "-p", str(bbc), *llm_args(llm), *SMALL, "--generate", "pgkd", "--generate-samples",
                    "4")
    assert first.returncode == 0, first.stderr
    assert "+4 generated" in " ".join(first.stdout.split()) and "SIMULATED" not in first.stdout  # lines may wrap
    sent = llm.requests()
    generations = [r for r in sent if r["schema"] == "generated_samples"]
    assert len(generations) == 2  # rounds 1 and 2 (round 0 has no student to learn from yet)
    prompt = generations[0]["body"]["messages"][1]["content"]
    assert "The student's validation report" in prompt and "exactly 4 new" in prompt
    with Project.open(bbc, read_only=True) as project:
        con = project.store.con
        synthetic = con.execute("SELECT split, count(*) FROM documents WHERE source = 'synthetic' GROUP BY 1"
                                ).fetchall()
        assert synthetic == [("pool", 8)]  # 2 x 4 kept: the duplicate and the made-up label were dropped
        rounds = project.rounds(1)
        assert [r.metrics["generated"] for r in rounds] == [0, 4, 4]
        assert [r.n_labels for r in rounds] == [10, 24, 38]  # the run trains on what was generated
        calls = con.execute("SELECT purpose, count(*) FROM teacher_calls GROUP BY 1 ORDER BY 1").fetchall()
        n_val = len(project.store.ids_in_split("val"))
        assert calls == [("generate", 2), ("label", 30 + n_val)]

    llm.configure()
    second = cli("distill", "-p", str(bbc), *llm_args(llm), *SMALL, "--generate", "pgkd", "--generate-samples",
                     "4")
    assert second.returncode == 0, second.stderr
    assert llm.requests() == []  # every label and every generation came from the ledger
    with Project.open(bbc, read_only=True) as project:
        assert [r.n_labels for r in project.rounds(2)] == [10, 24, 38]
    cost = cli("cost", "-p", str(bbc))
    assert cost.returncode == 0, cost.stderr
    lines = [line for line in cost.stdout.splitlines() if "fake-model" in line]
    assert len(lines) == 2 and lines[0].split("│")[3].strip() == str(32 + n_val)  # run 1 paid for every call
    # Run 2 paid for none: it reused every label, the generated samples' included.
    assert lines[1].split("│")[3].strip() == "0" and lines[1].split("│")[-3].strip() == str(30 + n_val + 8)


def test_pure_pgkd_with_the_no_report_ablation(bbc: Path, llm: FakeLLM):
    answer_gold(llm, bbc)
    endless = cli("distill", "-p", str(bbc), *llm_args(llm), "--batch", "0", "--generate", "pgkd")
    assert endless.returncode == 1 and "max_rounds" in endless.stderr
    result = cli("distill", "-p", str(bbc), *llm_args(llm), "--seed-size", "10", "--batch", "0",
                     "--val-limit", "20", "--generate", "pgkd", "--generate-samples", "3", "--no-report",
                     "--max-rounds", "3")
    assert result.returncode == 0, result.stderr
    prompt = next(r for r in llm.requests() if r["schema"] == "generated_samples")["body"]["messages"][1]["content"]
    assert "validation report" not in prompt and "Samples the student classifies correctly" in prompt
    with Project.open(bbc, read_only=True) as project:
        rounds = project.rounds(1)
        # Ten bought labels, then only generated ones: 10, 13, 16.
        assert [(r.metrics["n_selected"], r.n_labels) for r in rounds] == [(10, 10), (10, 13), (10, 16)]


def test_plan_estimates_without_sending_and_is_close_to_the_real_cost(bbc: Path, llm: FakeLLM):
    answer_gold(llm, bbc)
    plan = cli("distill", "-p", str(bbc), *llm_args(llm), *SMALL, "--plan")
    assert plan.returncode == 0, plan.stderr
    assert "nothing was sent" in plan.stdout and re.search(r"labels \(30 training \+ 1\d validation\)", plan.stdout)
    assert llm.requests() == []
    planned = float(plan.stdout.split("total")[1].split("$")[1].split()[0])
    run = cli("distill", "-p", str(bbc), *llm_args(llm), *SMALL)
    assert run.returncode == 0, run.stderr
    with Project.open(bbc, read_only=True) as project:
        actual = project.store.spend()[0]
    assert actual == pytest.approx(planned, rel=0.15)


def test_a_usd_budget_needs_a_known_price(bbc: Path, llm: FakeLLM):
    result = cli("distill", "-p", str(bbc), "--model", "openai/fake-model", "--api-base", llm.api_base,
                     "--budget-usd", "1")
    assert result.returncode == 1 and "cannot be enforced" in result.stderr and "--price-in" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_cancelled_llm_run_records_what_was_in_flight_and_resumes_without_paying_twice(bbc: Path,
                                                                                        llm: FakeLLM):
    answer_gold(llm, bbc, delay=0.1)
    seen: list[str] = []
    config = DistillConfig(teacher="llm", teacher_options={"model": "openai/fake-model", "api_base": llm.api_base,
                                                           "price_in": 1.0, "price_out": 2.0, "concurrency": 4},
                           seed_size=10, batch=10, budget_labels=40, val_limit=20)
    with Project.open(bbc) as project:
        cancelled = project.distill(config, on_event=lambda event: seen.append(event.kind),
                                    should_stop=lambda: seen.count("label") >= 35)
        assert cancelled.status == "cancelled"
        recorded = project.store.con.execute("SELECT count(*) FROM teacher_calls").fetchall()[0][0]
    # Every request the server answered is in the ledger, in-flight ones included.
    assert recorded == len(llm.requests()) >= 35
    with Project.open(bbc) as project:
        resumed = project.distill(resume=cancelled.run_id)
        assert resumed.status == "finished" and resumed.rounds[-1].n_labels == 40
        hashes = project.store.con.execute("SELECT request_hash FROM teacher_calls").fetchall()
    assert len(hashes) == len(set(hashes))
    asked = Counter(r["document"] for r in llm.requests())
    assert max(asked.values()) == 1  # no document was ever sent twice


def test_the_demo_takes_an_llm_teacher_with_one_flag(tmp_path: Path, llm: FakeLLM):
    llm.configure(confidence=0.9)
    result = run_cli("demo", "--dir", str(tmp_path / "demo"), "--limit", "60", "--budget-labels", "20",
                     "--llm", "openai/gpt-4o-mini", "--api-base", llm.api_base)
    assert result.returncode == 0, result.stderr
    assert "LLM teacher openai/gpt-4o-mini" in result.stdout and "label budget reached (20/20)" in result.stdout
    assert len(llm.requests()) > 20 and "of the labels it sold" in result.stdout  # the test split is not bought
    with Project.open(tmp_path / "demo", read_only=True) as project:
        assert project.store.spend()[0] > 0  # priced from litellm's table


def test_the_zero_shot_teacher_labels_offline_and_calibrates_on_labelled_examples(real_bbc: Path):
    with Project.open(real_bbc) as project:
        ids = project.store.ids_in_split("pool")[:80]
        gold = project.store.gold(ids)
        teacher = get_plugins().get("teacher", "zeroshot").cls()
        descriptions = {label.name: label.description for label in project.config.labels}
        assert all(descriptions.values())  # the dataset brought descriptions for its labels
        context = TeachContext(project.labels, descriptions, encode=project.embedder.encode)
        docs = [Doc(d, t) for d, t in zip(ids, project.store.texts(ids), strict=True)]
        answers = list(teacher.label(docs, context))
        assert len(answers) == 80
        accuracy = sum(a.label == gold[a.doc_id] for a in answers) / 80
        assert accuracy >= 0.75
        assert all(sum(a.probs.values()) == pytest.approx(1.0) and a.confidence == max(a.probs.values())
                   for a in answers)
        default_key = teacher.request(docs[0], context)["temperature"]
        examples = [(d, t, gold[d]) for d, t in zip(ids[:40], project.store.texts(ids[:40]), strict=True)]
        calibrated = TeachContext(project.labels, descriptions, encode=project.embedder.encode, examples=examples)
        assert teacher.request(docs[0], calibrated)["temperature"] != default_key
        assert teacher.examples_wanted == 200


def test_distill_defaults_to_the_zero_shot_teacher_and_its_answers_cost_nothing(real_bbc: Path):
    bbc = real_bbc
    result = cli("distill", "-p", str(bbc), *SMALL)
    assert result.returncode == 0, result.stderr
    assert "teacher zeroshot(all-MiniLM-L6-v2)" in result.stdout and "SIMULATED" not in result.stdout
    with Project.open(bbc, read_only=True) as project:
        row = project.rounds(1)[-1]
        assert 0.6 <= row.metrics["teacher_accuracy"] <= 1.0 and row.cost_usd == 0
        prompts = project.store.con.execute("SELECT count(prompt) FROM teacher_calls").fetchall()[0][0]
        assert prompts == 0  # the request is the document itself: nothing extra is logged
        probs = json.loads(project.store.con.execute("SELECT probs FROM labels LIMIT 1").fetchall()[0][0])
        assert set(probs) == set(project.labels)


def test_the_api_key_is_read_from_the_environment_and_written_nowhere(bbc: Path, llm: FakeLLM):
    secret = "sk-live-7Hq2ZpX9wVtR4kLm"
    answer_gold(llm, bbc)
    # A process of its own: litellm's debug log goes to the real stderr, which only a child's capture sees.
    result = run_cli("distill", "-p", str(bbc), *llm_args(llm), *SMALL, "--max-rounds", "1", "--teacher-option",
                     "api_key_env=KDSTUDIO_TEST_KEY", env={"KDSTUDIO_TEST_KEY": secret, "LITELLM_LOG": "DEBUG"})
    assert result.returncode == 0, result.stderr
    assert {r["auth"] for r in llm.requests()} == {f"Bearer {secret}"}
    assert secret not in result.stdout + result.stderr
    for path in bbc.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    with Project.open(bbc, read_only=True) as project:
        assert secret not in json.dumps(project.store.dump(), default=str)


def test_a_run_killed_right_after_a_generation_replays_it_on_resume(bbc: Path, llm: FakeLLM):
    answer_gold(llm, bbc)
    config = DistillConfig(teacher="llm", teacher_options={"model": "openai/fake-model", "api_base": llm.api_base,
                                                           "price_in": 1.0, "price_out": 2.0},
                           seed_size=10, batch=10, budget_labels=40, val_limit=20, generate="pgkd",
                           generate_samples=3)

    def die_after_second_generation(event) -> None:
        if event.kind == "generated" and event.round == 2:
            raise KeyboardInterrupt  # as if killed between the generation call and the end of the round

    with Project.open(bbc) as project, pytest.raises(KeyboardInterrupt):
        project.distill(config, on_event=die_after_second_generation)
    with Project.open(bbc) as project:
        assert project.latest_run().status == "cancelled"
        replays: list = []
        resumed = project.distill(resume=1, on_event=lambda event: replays.append(event)
                                  if event.kind == "generated" else 0)
        assert resumed.status == "finished" and [r.generated for r in resumed.rounds] == [0, 3, 3, 3]
        assert [p.cached for p in replays] == [True, False]  # round 2 replayed from the ledger, round 3 new
    generations = [r for r in llm.requests() if r["schema"] == "generated_samples"]
    assert len(generations) == 3  # rounds 1, 2 and 3: none sent twice
    hashes = Counter(r["body"]["messages"][1]["content"] for r in generations)
    assert max(hashes.values()) == 1


def test_ctrl_c_records_the_answers_in_flight_and_the_resume_pays_for_none_of_them(bbc: Path, llm: FakeLLM):
    import signal
    import subprocess
    import sys
    import time

    answer_gold(llm, bbc, delay=0.5)
    args = [sys.executable, "-m", "kdstudio", "distill", "-p", str(bbc), *llm_args(llm), "--teacher-option",
            "concurrency=6", *SMALL]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(llm.requests()) < 8 and time.time() < deadline:  # requests are in flight
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted: what was done is saved" in stderr, stderr
    assert "Traceback" not in stderr
    sent = {r["document"] for r in llm.requests()}
    with Project.open(bbc) as project:
        recorded = project.store.con.execute("SELECT count(*) FROM teacher_calls").fetchall()[0][0]
        assert project.latest_run().status == "cancelled"
    assert recorded == len(sent)  # every request the server answered was recorded, none lost in flight
    llm.configure(lookup=llm_lookup(bbc), confidence=0.9)
    resumed = run_cli("distill", "--resume", "-p", str(bbc))
    assert resumed.returncode == 0, resumed.stderr
    assert not {r["document"] for r in llm.requests()} & sent  # nothing answered before was asked again


def llm_lookup(directory: Path) -> dict[str, str]:
    with Project.open(directory, read_only=True) as project:
        gold = project.store.gold()
        texts = dict(zip(gold, project.store.texts(list(gold)), strict=True))
    return {texts[d].strip(): label for d, label in gold.items()}


TIERS = {"cheap": {"error_rate": 0.3, "right": 0.9, "wrong": 0.6},
         "other": {"error_rate": 0.3, "right": 0.9, "wrong": 0.6},
         "strong": {"error_rate": 0.0, "right": 0.95}}


def member(llm: FakeLLM, model: str, price: float) -> str:
    return f"llm model=openai/{model} api_base={llm.api_base} price_in={price} price_out={price} backoff=0.05"


def spend_by_model(directory: Path, run_id: int) -> dict[str, tuple[int, float, float | None]]:
    with Project.open(directory, read_only=True) as project:
        return {r.model: (r.calls, r.usd, r.accuracy) for r in project.cost() if r.run_id == run_id}


def test_a_cascade_asks_the_dear_model_only_where_the_cheap_one_is_unsure(bbc: Path, llm: FakeLLM):
    answer_gold(llm, bbc, models=TIERS)
    args = ["--teacher", "cascade", "--teacher-option", f"first={member(llm, 'cheap', 1)}",
            "--teacher-option", f"then={member(llm, 'strong', 20)}", "--teacher-option", "below=0.8", *SMALL]
    result = cli("distill", "-p", str(bbc), *args)
    assert result.returncode == 0, result.stderr
    spent = spend_by_model(bbc, 1)
    cheap, strong = spent["openai/cheap"], spent["openai/strong"]
    verdict = next(v for m, v in spent.items() if m.startswith("cascade("))
    assert cheap[0] >= 40 and 0 < strong[0] < cheap[0]  # only the unsure answers went on
    assert verdict[0] == 0 and verdict[1] == 0  # the cascade's own rows are verdicts, paid by its members
    assert verdict[2] > cheap[2] + 0.1 and cheap[2] < 0.85  # the cascade is right where the cheap model was not
    sent = {(r["model"], r["document"]) for r in llm.requests()}
    assert all(model in ("cheap", "strong") for model, _ in sent)
    shown = cli("cost", "-p", str(bbc))
    assert "openai/strong" in shown.stdout and "accuracy" in shown.stdout
    # A second run with the same members is served from the ledger: nothing is sent or paid again.
    before = len(llm.requests())
    again = cli("distill", "-p", str(bbc), *args)
    assert again.returncode == 0, again.stderr
    assert len(llm.requests()) == before and all(v[1] == 0 for v in spend_by_model(bbc, 2).values())


def test_a_committee_escalates_disagreement_and_holds_the_usd_cap(bbc: Path, llm: FakeLLM):
    answer_gold(llm, bbc, models=TIERS)
    members = f"members={member(llm, 'cheap', 1)}; {member(llm, 'other', 1)}"
    result = cli("distill", "-p", str(bbc), "--teacher", "committee", "--teacher-option", members,
                     "--teacher-option", f"escalate={member(llm, 'strong', 20)}", *SMALL)
    assert result.returncode == 0, result.stderr
    spent = spend_by_model(bbc, 1)
    verdict = next(v for m, v in spent.items() if m.startswith("committee("))
    assert spent["openai/cheap"][0] == spent["openai/other"][0] and spent["openai/strong"][0] > 0
    assert verdict[2] > max(spent["openai/cheap"][2], spent["openai/other"][2]) + 0.1
    capped = cli("distill", "-p", str(bbc), "--teacher", "committee", "--teacher-option", members,
                     "--teacher-option", f"escalate={member(llm, 'strong', 20)}", *SMALL, "--seed", "9",
                     "--budget-usd", "0.05")
    assert capped.returncode in (0, 1) and "Traceback" not in capped.stderr
    with Project.open(bbc, read_only=True) as project:
        assert project.store.con.execute("SELECT sum(cost_usd) FROM teacher_calls WHERE run_id = 2").fetchall()[0][0] \
            <= 0.05 + 1e-9
    broken = cli("distill", "-p", str(bbc), "--teacher", "committee", "--teacher-option", "members=llm nope=1")
    assert broken.returncode == 1 and "unknown option" in broken.stderr and "Traceback" not in broken.stderr


TEMPLATE = """Guidelines from the desk: a story about a club's finances is business, not sport.
Classes:
{{ taxonomy }}
{% for label in labels %}[{{ label.name }}]{% endfor %}
Classify this one:
{{ document }}
"""


def test_a_prompt_of_your_own_is_planned_sent_recorded_and_keys_the_cache(bbc: Path, llm: FakeLLM, tmp_path: Path):
    answer_gold(llm, bbc)
    template = tmp_path / "prompt.j2"
    template.write_text(TEMPLATE, encoding="utf-8")
    args = ["-p", str(bbc), *llm_args(llm), *SMALL, "--prompt-file", str(template)]
    plan = cli("distill", *args, "--plan")
    assert plan.returncode == 0, plan.stderr
    assert "the prompt of one sampled document" in plan.stdout and "Guidelines from the desk" in plan.stdout
    assert llm.requests() == []
    first = cli("distill", *args)
    assert first.returncode == 0, first.stderr
    sent = [r for r in llm.requests() if r["schema"] == "label"]
    assert sent and all(r["body"]["messages"][-1]["content"].startswith("Guidelines from the desk") for r in sent)
    user = sent[0]["body"]["messages"][-1]["content"]
    assert "[business][entertainment][politics][sports][tech]" in user and "</document>" in user
    with Project.open(bbc, read_only=True) as project:
        config = json.loads(project.store.con.execute("SELECT config FROM runs ORDER BY id DESC LIMIT 1"
                                                      ).fetchall()[0][0])
        paid = project.store.spend()[1]
    assert config["teacher_options"]["prompt"] == TEMPLATE  # recorded with the run
    answer_gold(llm, bbc)
    again = cli("distill", *args)  # the same prompt: every answer comes from the ledger
    assert again.returncode == 0, again.stderr
    assert [r for r in llm.requests() if r["schema"] == "label"] == []
    template.write_text(TEMPLATE.replace("Guidelines from the desk", "Rules"), encoding="utf-8")
    changed = cli("distill", *args)  # a changed prompt is a new question
    assert changed.returncode == 0, changed.stderr
    assert len([r for r in llm.requests() if r["schema"] == "label"]) >= len(sent)
    with Project.open(bbc, read_only=True) as project:
        assert project.store.spend()[1] > paid


@pytest.mark.parametrize(("text", "said"), [
    ("{{ document", "the prompt template cannot be used (line 1)"),
    ("{{ documnet }}", "'documnet' is undefined"),
    ("No document here: {{ taxonomy }}", "never shows the document"),
    (None, "cannot read it"),
])
def test_a_prompt_file_that_cannot_work_is_one_line_and_sends_nothing(bbc: Path, llm: FakeLLM, tmp_path: Path,
                                                                      text: str | None, said: str):
    template = tmp_path / "prompt.j2"
    if text is not None:
        template.write_text(text, encoding="utf-8")
    answer_gold(llm, bbc)
    result = cli("distill", "-p", str(bbc), *llm_args(llm), *SMALL, "--prompt-file", str(template))
    assert result.returncode != 0 and said in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # the line and its fix
    assert llm.requests() == []
    with Project.open(bbc, read_only=True) as project:
        assert project.store.spend()[1] == 0 and project.runs() == []
