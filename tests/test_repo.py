"""The repository's own promises: two commands, CI runs the test one, ruff is clean, the core stays plugin-free."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.DOTALL)
    assert first_block, "README.md must open with a code block of two commands"
    return [line for line in first_block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_opens_with_exactly_two_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert "kdstudio demo" in demo and "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()



def test_the_main_job_installs_no_test_tools():
    """The demo's set-up installs kdstudio alone; the test command adds the dev extras (pytest, Ray, ...)."""
    demo, tests = readme_commands()
    assert "--dev" not in demo and "bootstrap.sh --dev" in tests
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = " ".join(project["dependencies"])
    assert not any(tool in core for tool in ("pytest", "ray", "ruff", "jsonschema"))
    assert {"pytest", "ruff"} <= {re.split(r"[<>=\[]", d)[0] for d in project["optional-dependencies"]["dev"]}


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_core_never_imports_a_builtin_plugin():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "kdstudio").rglob("*.py")
                 if "kdstudio_plugins" in p.read_text(encoding="utf-8")]
    assert offenders == []


def test_sql_lives_only_in_the_store():
    pattern = re.compile(r"\b(SELECT|INSERT INTO|CREATE TABLE|DELETE FROM)\b")
    sources = [*(ROOT / "kdstudio").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in sources
                 if "store" not in p.parts and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_the_tui_talks_to_the_project_facade_only():
    """No SQL, no store, no model code under kdstudio/tui/: the app calls Project and shows what it returns."""
    forbidden = re.compile(r"^\s*(?:from|import)\s+(kdstudio\.store|kdstudio\.loop|duckdb|torch|transformers|"
                           r"sentence_transformers|sklearn|litellm|onnxruntime)\b", re.MULTILINE)
    offenders = {str(p.relative_to(ROOT)): forbidden.findall(p.read_text(encoding="utf-8"))
                 for p in (ROOT / "kdstudio" / "tui").rglob("*.py")}
    assert {path: found for path, found in offenders.items() if found} == {}


def test_docs_json_names_every_field_of_every_schema():
    import json

    page = (ROOT / "docs" / "json.md").read_text(encoding="utf-8")

    def keys(node) -> set[str]:
        if isinstance(node, dict):
            found = set(node.get("properties", {})) if isinstance(node.get("properties"), dict) else set()
            return found | {k for v in node.values() for k in keys(v)}
        return {k for v in node for k in keys(v)} if isinstance(node, list) else set()

    for path in sorted((ROOT / "kdstudio" / "schemas").glob("*.schema.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        assert f"`{document['$id']}`" in page, path.name
        missing = sorted(k for k in keys(document) - {"schema"} if not re.search(rf"[`.\]]{re.escape(k)}`", page))
        assert missing == [], (path.name, missing)


def test_the_api_reference_is_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "api_doc.py"), "--check"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_shell_completion_works_as_the_readme_says():
    import os

    result = subprocess.run([sys.executable, "-m", "kdstudio"], capture_output=True, text=True,
                            env={**os.environ, "_KDSTUDIO_COMPLETE": "bash_source"})
    assert result.returncode == 0 and "_kdstudio_completion" in result.stdout, result.stdout + result.stderr
    assert '_KDSTUDIO_COMPLETE=bash_source kdstudio' in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_settings_schema_and_their_docs_are_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "settings_doc.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
