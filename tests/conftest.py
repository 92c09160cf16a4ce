from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import real_parts

from kdstudio.atomic_dir import replacing
from kdstudio.config import Label
from kdstudio.loop import DistillConfig
from kdstudio.project import Project

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A machine that says not to write bytecode (PYTHONDONTWRITEBYTECODE) makes every worker rewrite every test module's
# asserts again (7.5 s of CPU a worker; 3.4 s from the cache) and every kdstudio process a test starts compile
# kdstudio again (0.77 s of CPU to import the loop; 0.45 s): the suite writes its caches, beside the sources, ignored
# by git. Set before the test modules are imported; the children inherit it.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
if "PYTEST_XDIST_WORKER" in os.environ:
    # One worker per core: torch's own threads (one per core by default, in every worker and every CLI child) would
    # oversubscribe the cores, and spinning OpenMP threads cost more CPU than they save. Set before torch loads.
    for knob in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(knob, "1")
ROOT = Path(__file__).resolve().parent.parent
# Encoders built on first use (the static one) go to a cache of the test suite's own that outlives the test run (a
# clean clone builds it once), never the user's; set before any child process or Ray cluster starts, so that they all
# share it.
CACHE = ROOT / ".pytest_cache" / "kdstudio-cache"
CACHE.mkdir(parents=True, exist_ok=True)
os.environ["KDSTUDIO_CACHE_DIR"] = str(CACHE)
LABELS = ["sports", "politics", "tech"]
# The suite's own plugin (a test encoder whose vectors cost nothing) loads through the ordinary plugin machinery, in
# this process and in every kdstudio process a test starts.
os.environ["KDSTUDIO_PLUGINS"] = "kdstudio_testkit"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
# The in-process command line (`cli`) prints at the width a child process gets (see run_cli).
os.environ["COLUMNS"] = "200"
TEST_ENCODER = "hashed"
pytest_plugins = ["real_parts_plugin"]  # which test runs, for the real-parts log (tests/real_parts.py)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, in a child process, as a user would run it."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "kdstudio", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout, input=input_text)


def run_closed(args: list[str], redirect: str, cwd: Path, columns: int = 120) -> subprocess.CompletedProcess[str]:
    """`kdstudio ARGS` from a shell that closes one of its standard streams first (`<&-` or `>&-`)."""
    line = " ".join(["exec", shlex.quote(sys.executable), "-m", "kdstudio", *map(shlex.quote, args), redirect])
    env = {**os.environ, "LABEL_STUDIO_URL": "", "COLUMNS": str(columns)}
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


@dataclass
class CliResult:
    """What `cli` gives back: the shape of subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str
    exception: BaseException | None = None


def cli(*args: str, input_text: str | None = None, env: dict[str, str] | None = None) -> CliResult:
    """The command line in this process (click's runner): for tests of behaviour rather than of being a process."""
    from click.testing import CliRunner

    from kdstudio.cli import cli as command

    result = CliRunner().invoke(command, list(args), input=input_text, env=env, catch_exceptions=True)
    unexpected = result.exception if not isinstance(result.exception, SystemExit) else None
    stderr = result.stderr
    if unexpected is not None:  # as a real process would print it, so that "no Traceback" still means something
        stderr += "".join(traceback.format_exception(*result.exc_info))  # type: ignore[misc]
    return CliResult(result.exit_code, result.stdout, stderr, unexpected)


def cheap_slice(directory: Path, limit: int, seed: int, dims: int | None = None, **options) -> Path:
    """A stratified slice of bbc-news embedded with the test encoder (no model weights; seconds); `dims` other than
    its default where a test fits students whose cost grows with the dimension (LDA, boosted trees)."""
    project, _ = Project.from_dataset("bbc-news", directory, limit=limit, seed=seed, **options)
    with project:
        project.embed(encoder=TEST_ENCODER, encoder_options={"dims": dims} if dims else None)
    return directory


def as_before_vector_shards(directory: Path) -> None:
    """Turn a project back into what schema 5 made: every vector in DuckDB's `embeddings` table, no shards."""
    import duckdb
    import pyarrow as pa

    from kdstudio.store import DB_NAME, Store
    from kdstudio.vectors import vectors_column

    store = Store.open(directory / DB_NAME)
    sets = store.con.execute("SELECT model, directory FROM vector_sets").fetchall()
    tables = {model: store.embedding_matrix(model) for model, _ in sets}
    store.close()
    con = duckdb.connect(str(directory / DB_NAME))
    con.execute("CREATE TABLE embeddings (doc_id VARCHAR NOT NULL, model VARCHAR NOT NULL, vector FLOAT[] NOT NULL, "
                "created_at TIMESTAMP NOT NULL DEFAULT current_timestamp, PRIMARY KEY (doc_id, model))")
    for model, (ids, matrix) in tables.items():
        batch = pa.table({"doc_id": pa.array(ids, pa.string()), "vector": vectors_column(matrix)})
        con.register("_old", batch)
        con.execute("INSERT INTO embeddings (doc_id, model, vector) SELECT doc_id, ?, vector FROM _old", [model])
        con.unregister("_old")
    con.execute("DROP TABLE vector_rows")
    con.execute("DROP TABLE vector_sets")
    con.execute("DELETE FROM schema_version WHERE version >= 6")
    con.close()
    shutil.rmtree(directory / "vectors")


@pytest.fixture
def project(tmp_path: Path):
    with Project.init(tmp_path / "proj", [Label(name) for name in LABELS]) as p:
        yield p


def plugin_module(name: str, **attrs) -> types.ModuleType:
    """A module object standing in for a plugin's, with `attrs` (its hookimpls) in it."""
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def embedded_slice(directory: Path, limit: int, seed: int) -> Path:
    """A stratified slice of bbc-news, imported and embedded with the real MiniLM (the slow tier's)."""
    project, _ = Project.from_dataset("bbc-news", directory, limit=limit, seed=seed)
    with project:
        project.embed()
    return directory


# -- real parts, built once per test run ---------------------------------------------------------------------------


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Any]) -> tuple[Path, Any]:
    """A real part (an embedded slice, an exported model) built once per test run, by whichever worker asks first:
    the others wait for it and share it (pytest-xdist's workers share the parent of their temporary folders). `build`
    fills the folder it is given and returns what it wants to say (JSON), which every asker gets back."""
    base = factory.getbasetemp()
    root = (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "built-once"
    root.mkdir(exist_ok=True)
    target, said = root / name, root / f"{name}.json"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not said.exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            said.write_text(json.dumps(build(target)), encoding="utf-8")
    return target, json.loads(said.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def minilm_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The slow tier's one bbc-news slice embedded with the real MiniLM. Shared: copy it (`fresh_copy`) to write."""
    folder, _ = built_once(tmp_path_factory, "minilm-slice", lambda d: str(embedded_slice(d / "bbc", 300, 4)))
    return folder / "bbc"


def unembedded_slice(base: Path, limit: int, seed: int, encoder: str | None = None) -> dict:
    """A bbc-news slice imported but not embedded (for engines to embed), with `encoder` as its own (default: the
    real MiniLM), and the ids and vectors that the in-process engine gives it (computed on a copy)."""
    project, _ = Project.from_dataset("bbc-news", base / "bbc", limit=limit, seed=seed)
    with project:
        if encoder is not None:
            project.config.embedding.encoder = encoder
            project.config.save(project.directory)
    with Project.open(fresh_copy(base / "bbc", base / "local")) as local:
        local.embed()
        ids, matrix = local.store.embedding_matrix(local.vector_key)
    return {"project": base / "bbc", "ids": ids, "vectors": matrix, "key": local.vector_key}


def fresh_copy(directory: Path, tmp_path: Path) -> Path:
    copy = tmp_path / directory.name
    shutil.copytree(directory, copy)
    return copy


@pytest.fixture(scope="session")
def static_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The static encoder's first use on a machine, from the command line: a bbc-news slice embedded with
    `--encoder static` against an empty cache of its own, so that it distills the encoder from MiniLM. Built once per
    test run; the encoder then joins the suite's cache, which every other project, child process and Ray worker
    reads. Each asker gets its own copy of the project."""

    def build(base: Path) -> dict:
        project, _ = Project.from_dataset("bbc-news", base / "bbc", limit=240, seed=7)
        project.close()
        first = run_cli("embed", "-p", str(base / "bbc"), "--encoder", "static", timeout=600,
                        env={"KDSTUDIO_CACHE_DIR": str(base / "cache")})
        assert first.returncode == 0, first.stderr
        for built in (base / "cache" / "static").iterdir():
            shared = CACHE / "static" / built.name
            if not shared.exists():
                with replacing(shared) as staging:  # a reader never sees half a model
                    shutil.copytree(built, staging, dirs_exist_ok=True)
        return {"stdout": first.stdout, "stderr": first.stderr}

    (CACHE / "static").mkdir(parents=True, exist_ok=True)
    base, said = built_once(tmp_path_factory, "static", build)
    mine = fresh_copy(base / "bbc", tmp_path_factory.mktemp("static-project"))
    return {"base": base, "project": mine, "cache": base / "cache",
            "first": subprocess.CompletedProcess(["kdstudio", "embed"], 0, said["stdout"], said["stderr"])}


@pytest.fixture(scope="session")
def exported(minilm_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The MiniLM slice distilled, its best student exported in fp32 and int8 from the command line: built once per
    test run for the export, runtime, predict and scale-out tests. The model folders are shared and only read; each
    worker gets its own copy of the project."""

    def build(base: Path) -> dict:
        fresh_copy(minilm_slice, base)
        with Project.open(base / "bbc") as project:
            project.distill(DistillConfig(teacher="oracle", seed_size=20, batch=20, budget_labels=60))
        runs = {"fp32": run_cli("export", "-p", str(base / "bbc"), "--out", str(base / "fp32"), "--license",
                                "apache-2.0", "--language", "en"),
                "int8": run_cli("export", "-p", str(base / "bbc"), "--out", str(base / "int8"), "--quantize", "int8")}
        return {name: [r.returncode, r.stdout, r.stderr] for name, r in runs.items()}

    base, said = built_once(tmp_path_factory, "exported", build)
    mine = fresh_copy(base / "bbc", tmp_path_factory.mktemp("exported-project"))
    runs = {name: subprocess.CompletedProcess(["kdstudio", "export"], *said[name]) for name in ("fp32", "int8")}
    return {"base": base, "project": mine, "fp32": base / "fp32", "int8": base / "int8", "fp32_run": runs["fp32"],
            "int8_run": runs["int8"]}



# -- the two tiers -----------------------------------------------------------------------------------------------
#
# The fast tier (`-m "not slow"`) tests logic on vectors that cost nothing, in this process. The slow tier holds what
# must be real: MiniLM and static embedding, ONNX export and the runtime, servers (the fake LLM, Label Studio, Ray),
# the demo, kills of real processes. A test that uses a fixture below is slow by that alone; a test that is not slow
# and loads a model library, starts a server or exports fails with the reason (see `pytest_runtest_call`).

SLOW_FIXTURES = {"minilm_slice", "exported", "static_build", "llm", "server", "cluster", "static", "cascade",
                 "with_minilm"}
HEAVY_MODULES = ("torch", "transformers", "sentence_transformers", "ray", "onnxruntime", "model2vec", "skl2onnx")
# What a test loading one of these uses: a real model (MiniLM, static), the runtime, an export, Ray, the LLM client
# (litellm: its provider rules and price table are real, and it takes each process 4 s of CPU to import). (torch
# alone is no sign: skops imports it when a student is saved, through scikit-learn's list of estimators.)
REAL_MODULES = ("sentence_transformers", "ray", "onnxruntime", "model2vec", "skl2onnx", "litellm")
# A real part, by the command line of a process a test starts.
REAL_COMMANDS = ("fake_llm_server.py", "label-studio", "raylet", "gcs_server", "-m kdstudio export",
                 "-m kdstudio predict", "-m kdstudio demo")
# The heaviest test files first: a file runs on one worker, and the longest ones must not start last. The two that
# build what others share (the static encoder; the MiniLM slice and its exported models) start first, one on each
# worker, so that nobody waits long for them.
HEAVY_FIRST = ("test_static_tier.py", "test_export.py", "test_ray.py", "test_review.py", "test_llm_loop.py",
               "test_streams.py", "test_cli.py", "test_trust.py", "test_budget_cuts.py", "test_embeddings.py",
               "test_fewer_calls.py", "test_tui.py")
# The fast tier's own heaviest files (`-m "not slow"`), first for the same reason.
FAST_HEAVY_FIRST = ("test_tui.py", "test_method_auto.py", "test_loop.py", "test_attacks.py", "test_check.py",
                    "test_trust.py", "test_streaming_pool.py", "test_budget_cuts.py")
LAUNCHED: list[str] = []
_popen_init = subprocess.Popen.__init__


def _watched_popen_init(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
    LAUNCHED.append(" ".join(map(str, args)) if isinstance(args, list | tuple) else str(args))
    _popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _watched_popen_init  # type: ignore[method-assign]
real_parts.install()


def _real_parts() -> tuple[set[str], list[str]]:
    loaded = {m for m in REAL_MODULES if m in sys.modules}
    return loaded, [c for c in LAUNCHED if any(part in c for part in REAL_COMMANDS)]


def _fast_tier(config: pytest.Config) -> bool:
    return "not slow" in (config.getoption("markexpr", "") or "")


def pytest_configure(config: pytest.Config) -> None:
    """A run that includes the slow tier starts building Label Studio's virtualenv at once, in the background (pip
    spends most of its two minutes waiting on downloads): the test that needs it waits on the same lock
    (tests/labelstudio_server.py) and usually finds it built."""
    from labelstudio_server import VENV, VERSION

    if "PYTEST_XDIST_WORKER" in os.environ or _fast_tier(config):
        return
    if (VENV / "kdstudio-stamp").is_file() and (VENV / "kdstudio-stamp").read_text().strip() == VERSION:
        return
    log = CACHE.parent / "labelstudio-build.log"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.Popen(["flock", str(ROOT / ".venv-labelstudio.lock"), "bash", str(ROOT / "scripts" / "labelstudio.sh")],
                     cwd=ROOT, env={**os.environ, "PYTHON": base}, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                     start_new_session=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    order = {name: i for i, name in enumerate(FAST_HEAVY_FIRST if _fast_tier(config) else HEAVY_FIRST)}
    items.sort(key=lambda item: order.get(Path(str(item.fspath)).name, len(order)))  # stable: in-file order kept


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    return (yield from _stays_fast(item, "its fixtures"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    return (yield from _stays_fast(item, "it"))


def _stays_fast(item: pytest.Item, who: str):
    if item.get_closest_marker("slow"):
        return (yield)
    modules = getattr(item, "module", None)
    heavy = sorted({v.__name__.split(".")[0] for v in vars(modules).values() if isinstance(v, types.ModuleType)}
                   & set(HEAVY_MODULES)) if modules is not None else []
    if heavy:
        raise pytest.fail.Exception(f"a fast test in a module that imports {', '.join(heavy)}: mark the module "
                                    "slow, or import it inside the slow tests")
    loaded, launched = _real_parts()
    result = yield
    now_loaded, now_launched = _real_parts()
    if now_loaded - loaded or len(now_launched) > len(launched):
        what = sorted(now_loaded - loaded) + now_launched[len(launched):]
        raise pytest.fail.Exception(f"a fast test, but {who} loaded or started a real part ({'; '.join(what)}): "
                                    "mark it slow (@pytest.mark.slow)")
    return result
