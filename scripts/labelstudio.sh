#!/usr/bin/env bash
# Builds .venv-labelstudio: Label Studio in a virtualenv of its own (its `openai<2` pin cannot share kdstudio's
# environment with litellm). Idempotent: a stamp remembers the version, so a second run returns at once.
# Start it afterwards with:
#   .venv-labelstudio/bin/label-studio start --internal-host 127.0.0.1 --port 8080 --no-browser
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.23.2
venv=.venv-labelstudio
stamp="$venv/kdstudio-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ] && [ -x "$venv/bin/label-studio" ]; then
    exit 0
fi
python=""
for candidate in "${PYTHON:-}" python3 python3.11 python3.12 python; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        python=$candidate
        break
    fi
done
if [ -z "$python" ]; then
    echo "Label Studio needs Python 3.10 or newer; set PYTHON=/path/to/python3" >&2
    exit 1
fi
"$python" -m venv --clear "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip
"${pip[@]}" install --quiet "label-studio==$version"
echo "$version" > "$stamp"
