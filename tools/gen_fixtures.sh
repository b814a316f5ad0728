#!/usr/bin/env bash
# gen_fixtures.sh -- regenerate tests/fixtures/models/ (tiny random HF models and
# transformers' outputs for them). Creates a virtual environment from
# tools/requirements-gen.txt on first use ($LT_GEN_VENV, default .venv-gen/),
# then runs tools/gen_fixtures.py. Not run by CI: the fixtures are committed.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${LT_GEN_VENV:-$here/.venv-gen}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    --extra-index-url https://download.pytorch.org/whl/cpu -r "$here/tools/requirements-gen.txt"
fi
exec "$venv/bin/python" "$here/tools/gen_fixtures.py" "$@"
