"""The shape of the house: layers, plugin registry hygiene, model files that cannot run code, one source of
configuration, resume as a pure function of the run log, the vector index."""

from __future__ import annotations

import ast
import math
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, cheap_slice, cli, embedded_slice, fresh_copy, plugin_module, write

from kdstudio.config import CONFIG_NAME, Label
from kdstudio.embeddings import resolve_model_path
from kdstudio.errors import ConfigError, KdError
from kdstudio.hookspecs import hookimpl
from kdstudio.interfaces import Selector
from kdstudio.plugins import Plugins
from kdstudio.project import Project
from kdstudio.run_state import restore
from kdstudio.store import RoundRow

# -- layers -----------------------------------------------------------------------------------------------------

# What the layers above the façade (the CLI, the TUI, render) may import of kdstudio: the façade and its vocabulary,
# each other, leaf utilities, and the project-free predict path (the runtime that ships with a model, and its
# engine form in kdstudio.scale).
# The output layer (render, its table layout, the --json documents, the plots) sits above the façade too.
OUTPUT = ("kdstudio/render.py", "kdstudio/fitted_table.py", "kdstudio/json_views.py", "kdstudio/plot.py")
ABOVE = ("kdstudio/cli.py", *OUTPUT, "kdstudio/tui")
TUI = {f"kdstudio.tui.{p.stem}" for p in (ROOT / "kdstudio" / "tui").glob("*.py")}
ALLOWED_ABOVE = {"kdstudio", "kdstudio.project", "kdstudio.types", *(f"kdstudio.{Path(p).stem}" for p in OUTPUT),
                 *TUI, "kdstudio.errors", "kdstudio.money", "kdstudio.secrets", "kdstudio.runtime",
                 "kdstudio.predict_io", "kdstudio.scale", "kdstudio.terminal"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from kdstudio import method_auto` imports a module as surely as `import kdstudio.method_auto` does.
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if _is_module(f"{node.module}.{alias.name}"))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] in ("kdstudio", "kdstudio_plugins")}


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _modules(*where: str) -> list[Path]:
    return [p for w in where for p in ([ROOT / w] if w.endswith(".py") else sorted((ROOT / w).rglob("*.py")))]


def test_no_module_imports_across_the_layers():
    for path in _modules(*ABOVE):
        assert _imports(path) <= ALLOWED_ABOVE, (path.name, _imports(path) - ALLOWED_ABOVE)
    above = {"kdstudio.cli", *(f"kdstudio.{Path(p).stem}" for p in OUTPUT), *TUI, "kdstudio.types"}
    for path in _modules("kdstudio"):
        name = "kdstudio." + ".".join(path.relative_to(ROOT / "kdstudio").with_suffix("").parts)
        imported = _imports(path)
        assert not {m for m in imported if m.startswith("kdstudio_plugins")}, f"{name} imports a built-in plugin"
        if name not in above and name not in ("kdstudio.__main__",):
            assert not imported & above, (name, imported & above)
        if name not in above | {"kdstudio.project", "kdstudio.__main__"}:
            assert "kdstudio.project" not in imported, name
    engines = _imports(ROOT / "plugins/engines/ray_engine.py")
    assert engines <= {"kdstudio.engine", "kdstudio.errors", "kdstudio.component"}, engines


def test_nothing_unpickles_a_model():
    for path in _modules("kdstudio", "plugins"):
        text = path.read_text(encoding="utf-8")
        for call in ("joblib.load", "pickle.load", "torch.load", "allow_pickle=True"):
            assert call not in text, (path, call)


# -- the plugin registry -----------------------------------------------------------------------------------------


class Impostor(Selector):
    """A third party's selector that takes a built-in's name."""

    name = "margin"

    def select(self, context, k):
        raise AssertionError("never used")


class Unfinished(Selector):
    """A selector that forgot to implement select."""

    name = "unfinished"


def test_a_duplicate_name_is_a_load_error_naming_both_and_the_builtin_stays():
    taker = plugin_module("taker", register_selectors=hookimpl(specname="register_selectors")(
        lambda register: register(Impostor)))
    plugins = Plugins.load(extra=[("taker", taker)])
    assert [e.plugin for e in plugins.errors] == ["taker"]
    error = plugins.errors[0].error
    assert "'margin'" in error and "(registered in-process)" in error and "kdstudio 0.1.0" in error, error
    assert plugins.get("selector", "margin").cls is not Impostor
    assert plugins.get("selector", "margin").distribution.startswith("kdstudio ")


def test_a_class_that_leaves_an_abstract_method_is_a_load_error():
    lazy = plugin_module("lazy", register_selectors=hookimpl(specname="register_selectors")(
        lambda register: register(Unfinished)))
    plugins = Plugins.load(extra=[("lazy", lazy)])
    assert "does not implement select" in plugins.errors[0].error
    assert "unfinished" not in plugins.registered("selector")


# -- model files -------------------------------------------------------------------------------------------------


class Payload:
    """Pickled, it runs `touch MARKER` when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = cheap_slice(tmp_path_factory.mktemp("house") / "bbc", limit=80, seed=4)
    with Project.open(directory) as project:
        project.distill(project.distill_config({"teacher": "oracle", "seed_size": 10, "batch": 10,
                                                "budget_labels": 20, "val_limit": 10}))
    return directory


@pytest.fixture
def bbc(embedded: Path, tmp_path: Path) -> Path:
    return fresh_copy(embedded, tmp_path)


def _student_dir(directory: Path) -> Path:
    with Project.open(directory) as project:
        return Path(project.load_student()[1]["path"])


def test_a_planted_pickle_is_refused_and_never_runs(bbc: Path, tmp_path: Path):
    folder = _student_dir(bbc)
    marker = tmp_path / "pwned"
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "student.joblib").write_bytes(pickle.dumps(Payload(marker)))
    result = cli("export", "-p", str(bbc), "--out", str(tmp_path / "m"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "refusing to load the student" in result.stderr and "pickle" in result.stderr
    assert not marker.exists()


def test_a_model_file_naming_a_foreign_type_is_refused(bbc: Path, tmp_path: Path):
    import skops.io

    folder = _student_dir(bbc)
    marker = tmp_path / "pwned"
    skops.io.dump(Payload(marker), folder / "estimator.skops")
    with Project.open(bbc) as project, pytest.raises(KdError, match="holds types a kdstudio student never uses"):
        project.load_student()
    assert not marker.exists()


def test_a_saved_student_predicts_exactly_as_before(bbc: Path):
    with Project.open(bbc) as project:
        student, record = project.load_student()
        ids = project.store.ids_in_split("test")[:20]
        vectors = project.store.vectors(project.vector_key, ids)
        again = type(student).load(Path(record["path"]))
        np.testing.assert_array_equal(student.predict_proba(vectors), again.predict_proba(vectors))
    assert sorted(p.name for p in Path(record["path"]).iterdir()) == ["estimator.skops", "student.json"]


# -- one source of configuration ---------------------------------------------------------------------------------


def test_defaults_come_from_the_dataclass_then_the_project_then_the_flags(bbc: Path):
    toml = bbc / CONFIG_NAME
    toml.write_text(toml.read_text(encoding="utf-8") + '\n[distill]\nselector = "entropy"\nbatch = 5\n',
                    encoding="utf-8")
    with Project.open(bbc) as project:
        config = project.distill_config({"batch": 7})
        assert (config.selector, config.batch, config.student) == ("entropy", 7, "logreg")
    result = cli("distill", "-p", str(bbc), "--teacher", "oracle", "--seed-size", "10", "--budget-labels", "20",
                     "--val-size", "10")
    assert result.returncode == 0, result.stderr
    with Project.open(bbc) as project:
        run = project.latest_run()
        assert (run.config["selector"], run.config["batch"]) == ("entropy", 5)
        assert [r.n_labels for r in project.rounds(run.id) if r.phase == "done"] == [10, 15, 20]
    toml.write_text(toml.read_text(encoding="utf-8") + 'selectr = "margin"\n', encoding="utf-8")
    with Project.open(bbc) as project, pytest.raises(ConfigError, match=r"unknown settings \['selectr'\]"):
        project.distill_config()


def test_resume_applies_a_budget_and_refuses_a_changed_setting_by_name(bbc: Path):
    base = ["distill", "-p", str(bbc), "--teacher", "oracle", "--seed-size", "10", "--batch", "10", "--val-size",
            "10"]
    assert cli(*base, "--budget-labels", "20").returncode == 0
    refused = cli("distill", "-p", str(bbc), "--resume", "--selector", "random", "--budget-labels", "30")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "selector 'random' (the run has 'margin')" in refused.stderr
    with Project.open(bbc) as project:
        assert project.latest_run().config["budget_labels"] == 20  # refused: nothing changed
    resumed = cli("distill", "-p", str(bbc), "--resume", "--budget-labels", "30", "--selector", "margin")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed with budget-labels: 20 -> 30" in resumed.stdout
    with Project.open(bbc) as project:
        run = project.latest_run()
        assert run.config["budget_labels"] == 30 and run.stop_reason == "label budget reached (30/30)"


@pytest.mark.slow
def test_embed_with_another_model_records_it_for_the_next_commands(tmp_path: Path):
    bbc = embedded_slice(tmp_path / "bbc", limit=40, seed=4)  # the real MiniLM, then another model
    other = resolve_model_path("all-MiniLM-L6-v2")  # the same network under another name: new vectors
    result = cli("embed", "-p", str(bbc), "--model", other)
    assert result.returncode == 0, result.stderr
    with Project.open(bbc) as project:
        assert project.config.embedding.model == other
        assert {model for model, _, _ in project.status().embeddings} == {"all-MiniLM-L6-v2", other}
    assert f'model = "{other}"' in (bbc / CONFIG_NAME).read_text(encoding="utf-8")
    failed = cli("embed", "-p", str(bbc), "--model", str(bbc / "no-such-model"))
    assert failed.returncode == 1
    with Project.open(bbc) as project:
        assert project.config.embedding.model == other  # a model that could not embed is not recorded


# -- run state and the vector index ------------------------------------------------------------------------------


def _row(round_no: int, phase: str, ids: list[str], loss: float | None = None, best: bool = False) -> RoundRow:
    metrics = {} if phase == "selected" else {"val": {"log_loss": loss}, "best": best, "n_selected": 0}
    return RoundRow(1, round_no, phase, "margin", [{"id": d, "score": 0.5} for d in ids], 9, {"round": round_no},
                    len(ids) if phase == "done" else None, 0.0, metrics, {})


def test_resume_is_a_pure_function_of_the_run_log():
    assert restore(1, []).round_no == 0 and restore(1, []).best_round is None
    history = [_row(0, "done", ["a", "b"], 0.9, True), _row(1, "done", ["c"], 0.7, True),
               _row(2, "done", ["d"], 0.8), _row(3, "selected", ["e", "f"])]
    state = restore(1, history)
    assert state.round_no == 3 and state.pending is history[-1]  # the unfinished round is redone as it was
    assert [s["id"] for s in state.selected] == ["a", "b", "c", "d"]
    assert (state.best_round, state.best_loss, state.since_lower_loss, state.lowest_val_loss) == (1, 0.7, 1, 0.7)
    assert state.selector_state == {"round": 3}
    finished = restore(1, history[:3])
    assert finished.round_no == 3 and finished.pending is None and math.isclose(finished.best_loss, 0.7)


def test_a_broken_config_section_is_one_line(tmp_path: Path):
    directory = tmp_path / "p"
    assert cli("init", str(directory), "--labels", "a,b").returncode == 0
    toml = directory / CONFIG_NAME
    write(toml, toml.read_text(encoding="utf-8") + "\n[review]\nlimit = 5\n[distill]\nbatch = 'x'\n")
    result = cli("distill", "-p", str(directory), "--plan")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr


def test_the_review_table_sets_push_defaults_and_names_unknown_keys(tmp_path: Path):
    with Project.init(tmp_path / "p", [Label("a"), Label("b")]) as project:
        project.config.review.limit = 5
        project.config.save(project.directory)
    toml = tmp_path / "p" / CONFIG_NAME
    assert "[review]" in toml.read_text(encoding="utf-8") and "limit = 5" in toml.read_text(encoding="utf-8")
    with Project.open(tmp_path / "p") as project:
        assert (project.config.review.limit, project.config.review.filter) == (5, "low-confidence")
    write(toml, toml.read_text(encoding="utf-8") + "belwo = 0.5\n")
    with pytest.raises(ConfigError, match=r"\[review\] has unknown settings \['belwo'\]"):
        Project.open(tmp_path / "p")


def test_saving_and_loading_a_student_never_imports_torch(tmp_path: Path):
    # skops walks every scikit-learn package when imported, and one of them imports torch: 0.4 GB a process.
    script = (
        "import sys, numpy as np\n"
        "from kdstudio.plugins import get_plugins\n"
        "cls = get_plugins().get('student', 'logreg').cls\n"
        "student = cls()\n"
        "student.fit(np.random.default_rng(0).random((30, 4)), np.arange(30) % 3, 3)\n"
        f"student.save(__import__('pathlib').Path({str(tmp_path / 's')!r}))\n"
        f"cls.load(__import__('pathlib').Path({str(tmp_path / 's')!r})).predict_proba(np.ones((1, 4)))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
