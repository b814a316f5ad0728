#!/usr/bin/env bash
# gen_fixtures.sh -- run the fixture generators that use torch / transformers / PEFT
# in one environment pinned by tools/requirements-gen.txt. Not run by CI: the
# fixtures are committed, and the C tests need no Python.
#
#   tools/gen_fixtures.sh [NAME ...]   the model fixtures: tests/fixtures/models/NAME
#       (gen_fixtures.py), their transformers 5 configs tests/fixtures/config/v5/
#       (gen_config_fixture.py v5-configs) and training references
#       tests/fixtures/train/NAME (gen_train_fixtures.py); no names: every model
#   tools/gen_fixtures.sh run tools/gen_X.py [ARGS ...]   one generator
#   tools/gen_fixtures.sh check   every torch generator (GENERATORS below) imports with
#       the pinned versions, and those with options answer --help / --list; writes nothing
#
# The environment: $LT_GEN_VENV (default .venv-gen/ in the source tree). One this
# script made is made from tools/requirements-gen.txt with pip (PyPI only) and
# updated when that file changes; any other (LT_GEN_VENV pointing at an existing
# environment) is used as it is. Either way the installed versions must equal the
# pins, or nothing runs.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
pins="$here/tools/requirements-gen.txt"
venv="${LT_GEN_VENV:-$here/.venv-gen}"
stamp="$venv/.luxtrain-gen-pins"
# the generators that need this environment (the others: the test venv, tools/requirements-test.txt,
# or llama-cpp-python, tools/requirements-gguf.txt)
GENERATORS="gen_fixtures gen_train_fixtures gen_config_fixture gen_peft_fixture gen_vocab_peft_fixture
gen_eval_fixtures gen_optim_fixture gen_cpu_ops_fixtures gen_safetensors_fixture gen_nf4_fixture
gen_template_fixtures gen_sample_model gen_qlora_merge_fixture"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    : >"$stamp"
fi
if [ -e "$stamp" ] && ! cmp -s "$pins" "$stamp"; then
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$pins"
    cp "$pins" "$stamp"
fi
py="$venv/bin/python"
# PEFT writes target_modules from a set: a fixed string hash keeps its order from run to run
export PYTHONHASHSEED=0

# the installed versions equal the pins (a local version suffix such as torch's +cu132 aside)
"$py" - "$pins" <<'EOF'
import re, sys
from importlib.metadata import PackageNotFoundError, version
bad = []
for line in open(sys.argv[1]):
    m = re.match(r"\s*([A-Za-z0-9_.-]+)==(\S+)", line)
    if not m:
        continue
    try:
        have = version(m[1]).split("+")[0]
    except PackageNotFoundError:
        have = "not installed"
    if have != m[2]:
        bad.append(f"{m[1]}: {have}, pinned {m[2]}")
if bad:
    sys.exit(f"{sys.prefix}: not the versions of tools/requirements-gen.txt:\n  " + "\n  ".join(bad))
EOF

case "${1:-}" in
run)
    shift
    [ $# -ge 1 ] || { echo "usage: $0 run tools/gen_X.py [ARGS ...]" >&2; exit 2; }
    exec "$py" "$@"
    ;;
check)
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    for g in $GENERATORS; do
        # import without running main (each generator guards it with __name__ == "__main__")
        "$py" -c "import importlib.util as u, sys
s = u.spec_from_file_location('$g', sys.argv[1]); s.loader.exec_module(u.module_from_spec(s))" \
            "$here/tools/$g.py" >/dev/null 2>"$log" || { cat "$log" >&2; echo "$g: does not import" >&2; exit 1; }
        echo "$g: imports"
    done
    "$py" "$here/tools/gen_fixtures.py" --list
    "$py" "$here/tools/gen_train_fixtures.py" --list
    for g in gen_fixtures gen_train_fixtures gen_sample_model gen_template_fixtures; do
        "$py" "$here/tools/$g.py" --help >/dev/null
    done
    echo "check: every generator imports with the pinned versions"
    ;;
*)
    "$py" "$here/tools/gen_fixtures.py" "$@"
    "$py" "$here/tools/gen_config_fixture.py" v5-configs
    "$py" "$here/tools/gen_train_fixtures.py" "$@"
    ;;
esac
