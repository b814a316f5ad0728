#!/usr/bin/env bash
# Installs the Debian packages luxtrain builds against (HDF5, cJSON, OpenBLAS,
# Open MPI) and creates the Python virtual environment used by the tests that
# compare against Hugging Face `tokenizers` and h5py. Idempotent; needs root
# (or sudo) for apt. Called by README's quickstart and by .ci/run.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
pkgs=(build-essential cmake libhdf5-dev libcjson-dev libopenblas-dev
      openmpi-bin libopenmpi-dev python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "setup-deps: installing ${missing[*]}"
  # another apt (unattended upgrades on a fresh machine) may hold the lock:
  # wait for it, up to 10 minutes, instead of failing at once
  lock=(-o DPkg::Lock::Timeout=600)
  $SUDO apt-get "${lock[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${lock[@]}" install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
# Test-time Python: pinned, small wheels only (no torch; the fixture generator
# has its own, heavier environment, see tools/gen_fixtures.py).
venv="${LT_VENV:-$here/.venv}"
if [ "${LT_NO_VENV:-0}" != 1 ]; then
  if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/tools/requirements-test.txt"
fi
echo "setup-deps: ok"
