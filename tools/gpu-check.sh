#!/usr/bin/env bash
# gpu-check.sh -- the one command for a session that has a GPU machine.
#
# Runs THERE, from the repository root, with .debs/ carried (fill it HERE
# first with tools/fetch-debs.sh). The GPU machine has nvcc, cmake and
# PyTorch's python3 but no network, no apt and none of Debian's HDF5 /
# cJSON / OpenBLAS / Open MPI. This script:
#   1. unpacks .debs/*.deb with dpkg -x into a prefix under /tmp (never /),
#      drops the libraries the machine already has, and points pkg-config
#      (PKG_CONFIG_SYSROOT_DIR / PKG_CONFIG_LIBDIR) and LD_LIBRARY_PATH at it
#      -- skipped when pkg-config already finds hdf5, libcjson and openblas;
#   2. configures with CUDA for the GPU present (sm_90a on Hopper, else
#      native), -DLUXTRAIN_MPI=OFF when there is no MPI, builds everything;
#   3. runs ctest (every test, the GPU ones included), and test_backend_ops
#      once more verbosely (its per-op errors go into the results);
#   4. runs every bench/bench_* program that was built (none is required);
#      bench_kernels writes its JSON into the results under "kernels"
#      (LT_BENCH_KERNELS=full for all three model sizes, default quick;
#      LT_BENCH_ONLY=<name> runs only that benchmark); then `luxtrain bench
#      step` on the Llama-3.2-1B shape (full and LoRA r 16) and the 8B shape
#      (LoRA r 16, --recompute), its JSON under "step" (LT_BENCH_STEP=0
#      skips it; LT_BENCH_ONLY=bench_step runs only it);
#   5. writes bench/results/<date>-<gpu>.json, copies it and the logs to
#      $OUT when that is set (the device tool brings $OUT back), and prints
#      a short table. Exit status: 0 only if the build and all tests passed.
#
# Device-tool call (one call, about 10 minutes):
#   run(command="bash tools/gpu-check.sh", carry=[".debs"], timeout_s=600)
#
# Options (for trying it on a machine without a GPU, see docs/cuda.md):
#   --force-debs       use .debs even if pkg-config finds the libraries
#   --no-prune         keep every unpacked library (even those the system has)
#   --configure-only   stop after cmake configure
#   --targets "a b"    build only these targets (default: all)
#   --no-bench         skip the benchmarks
# Environment: LT_DEPS_PREFIX (default /tmp/lt-deps), LT_BUILD_DIR (default
# build-gpu), LT_SHARED_DIR (real tokenizer files, default ./shared or
# ../shared), LT_CUDA_ARCH (override the architecture list).
set -uo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
force_debs=0 prune=1 configure_only=0 targets="" bench=1
while (($#)); do
  case "$1" in
    --force-debs) force_debs=1 ;;
    --no-prune) prune=0 ;;
    --configure-only) configure_only=1 ;;
    --targets) targets="$2"; shift ;;
    --no-bench) bench=0 ;;
    *) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

prefix="${LT_DEPS_PREFIX:-/tmp/lt-deps}"
build="${LT_BUILD_DIR:-$repo/build-gpu}"
logs="$build/gpu-check-logs"
mkdir -p "$logs"
multiarch="$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
jobs="$(nproc 2>/dev/null || echo 4)"
say() { printf '\n=== gpu-check: %s\n' "$*"; }

# ---------------------------------------------------------------------------
say "1. dependencies"
have_sys=0
pkg-config --exists hdf5 libcjson openblas 2>/dev/null && have_sys=1
if ((have_sys && !force_debs)); then
  echo "pkg-config finds hdf5, libcjson and openblas on this machine: using them"
else
  shopt -s nullglob
  debs=("$repo"/.debs/*.deb)
  if ((${#debs[@]} == 0)); then
    echo "gpu-check: no .debs/*.deb here and the libraries are missing." >&2
    echo "  Run tools/fetch-debs.sh on the development machine and carry .debs." >&2
    exit 1
  fi
  rm -rf "$prefix"
  mkdir -p "$prefix"
  for d in "${debs[@]}"; do dpkg -x "$d" "$prefix" || { echo "gpu-check: dpkg -x $d failed" >&2; exit 1; }; done
  ml="$prefix/usr/lib/$multiarch"
  # what Debian's alternatives system would have linked (no postinst ran)
  [[ -e "$ml/pkgconfig/hdf5.pc" ]] || ln -sf hdf5-serial.pc "$ml/pkgconfig/hdf5.pc"
  [[ -e "$ml/pkgconfig/openblas.pc" ]] || ln -sf ../openblas-pthread/pkgconfig/openblas.pc "$ml/pkgconfig/openblas.pc"
  [[ -e "$ml/libopenblas.so.0" ]] || ln -sf openblas-pthread/libopenblas.so.0 "$ml/libopenblas.so.0"
  if ((prune)); then
    # prefer the machine's own copy of any library it already has
    sys="$(ldconfig -p 2>/dev/null | awk '/x86-64/ {print $1}' | sort -u)"
    pruned=()
    for d in "$ml" "$prefix/lib/$multiarch"; do
      [[ -d "$d" ]] || continue
      for f in "$d"/lib*.so.*; do
        so="$(basename "$f")"
        case "$so" in libhdf5*|libcjson*|libopenblas*|libsz*|libaec*) continue ;; esac
        if grep -qxF "$so" <<<"$sys"; then rm -f "$f"; pruned+=("$so"); fi
      done
    done
    echo "using the machine's own: ${pruned[*]:-(none)}"
  fi
  export PKG_CONFIG_SYSROOT_DIR="$prefix"
  export PKG_CONFIG_LIBDIR="$ml/pkgconfig:$prefix/usr/share/pkgconfig"
  unset PKG_CONFIG_PATH
  export LD_LIBRARY_PATH="$ml:$prefix/lib/$multiarch:$ml/openblas-pthread:$ml/hdf5/serial${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  for m in hdf5 libcjson openblas; do
    printf '  %-9s %s\n' "$m" "$(pkg-config --cflags --libs "$m" 2>&1)"
  done
fi

# ---------------------------------------------------------------------------
say "2. configure and build"
gpu_name="none" cc="" driver=""
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu_name="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
  cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1)"
  driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
fi
if [[ -n "${LT_CUDA_ARCH:-}" ]]; then arch="$LT_CUDA_ARCH"
elif [[ "$cc" == 9.0 ]]; then arch="90a"  # Hopper: wgmma / setmaxnreg need sm_90a
elif [[ -n "$cc" ]]; then arch="native"
else arch="80;90"; fi
mpi=ON
command -v mpicc >/dev/null 2>&1 || mpi=OFF
py="$repo/.venv/bin/python"
if ! "$py" -c 'import sys' >/dev/null 2>&1; then py="$(command -v python3 || echo python3)"; fi
shared="${LT_SHARED_DIR:-}"
[[ -z "$shared" && -d "$repo/shared/tokenizers" ]] && shared="$repo/shared"
[[ -z "$shared" ]] && shared="$repo/../shared"
gen=()
command -v ninja >/dev/null 2>&1 && [[ ! -f "$build/CMakeCache.txt" ]] && gen=(-G Ninja)
echo "GPU: ${gpu_name} (compute ${cc:-?}, driver ${driver:-?}); CUDA arch ${arch}; MPI ${mpi}; python ${py}"
cmake -S "$repo" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DLUXTRAIN_CUDA=ON \
  "-DCMAKE_CUDA_ARCHITECTURES=$arch" "-DLUXTRAIN_MPI=$mpi" "-DLUXTRAIN_PYTHON=$py" \
  "-DLUXTRAIN_SHARED_DIR=$shared" 2>&1 | tee "$logs/configure.log"
configure_rc=${PIPESTATUS[0]}
if ((configure_rc != 0)); then echo "gpu-check: configure FAILED" >&2; exit 1; fi
if ((configure_only)); then echo "gpu-check: configured (--configure-only)"; exit 0; fi

t0=$(date +%s)
tflags=()
for t in $targets; do tflags+=(--target "$t"); done
cmake --build "$build" -j "$jobs" "${tflags[@]}" 2>&1 | tee "$logs/build.log" | grep -E 'error|warning: |Linking|Built target' | tail -40
build_rc=${PIPESTATUS[0]}
build_s=$(($(date +%s) - t0))
echo "build: rc ${build_rc}, ${build_s} s"

# ---------------------------------------------------------------------------
ctest_rc=1
if ((build_rc == 0)); then
  say "3. tests"
  rm -f "$build"/test-tmp/test_model_cuda/report.txt "$build"/test-tmp/test_train_cuda/report.txt
  if [[ -n "$targets" ]]; then
    echo "(only --targets were built: running only their tests)"
    tre="$(tr ' ' '|' <<<"$targets")"
    ctest --test-dir "$build" --output-on-failure -j 4 -R "^($tre)\$" 2>&1 | tee "$logs/ctest.log"
  else
    ctest --test-dir "$build" --output-on-failure -j 4 2>&1 | tee "$logs/ctest.log"
  fi
  ctest_rc=${PIPESTATUS[0]}
  if [[ -x "$build/tests/test_backend_ops" ]]; then
    LT_TEST_VERBOSE=1 LT_SOURCE_DIR="$repo" "$build/tests/test_backend_ops" >"$logs/backend_ops.log" 2>&1
    echo "test_backend_ops (verbose): rc $? -- $(tail -1 "$logs/backend_ops.log")"
  fi
  # whole-model and training comparisons: the error tables ctest ran them with
  for t in test_model_cuda test_train_cuda; do
    if [[ -f "$build/test-tmp/$t/report.txt" ]]; then
      cp "$build/test-tmp/$t/report.txt" "$logs/$t.txt"
      echo "--- $t (report)"; grep -v '^ *sample \|^lora: \|^full: ' "$logs/$t.txt" | cut -c1-200
    fi
  done
fi

# ---------------------------------------------------------------------------
: >"$logs/bench.log"
rm -f "$logs/bench_kernels.json" "$logs"/bench_step_*.json
if ((build_rc == 0 && bench)); then
  say "4. benchmarks"
  shopt -s nullglob
  found=0
  for b in "$build"/bench/bench_*; do
    [[ -x "$b" && -f "$b" ]] || continue
    name="$(basename "$b")"
    [[ -n "${LT_BENCH_ONLY:-}" && "$name" != "$LT_BENCH_ONLY" ]] && continue
    found=1
    runs=("")
    tmo=300
    # per-benchmark argument sets; a benchmark not listed runs with its defaults
    case "$name" in
      bench_kernels) kq="--quick"; [[ "${LT_BENCH_KERNELS:-quick}" == full ]] && kq="" tmo=540
                     runs=("--device cuda $kq --json $logs/bench_kernels.json") ;;
      bench_model_step) runs=("" "$repo/tests/fixtures/models/llama 2 20 50 cuda" \
                              "$repo/tests/fixtures/models/llama 16 256 20 cuda") ;;
    esac
    for args in "${runs[@]}"; do
      echo "--- $name $args" | tee -a "$logs/bench.log"
      s0=$(date +%s.%N)
      # shellcheck disable=SC2086
      LT_SOURCE_DIR="$repo" timeout "$tmo" "$b" $args >>"$logs/bench.log" 2>&1
      rc=$?
      printf -- '--- rc %d, %.1f s\n' "$rc" "$(echo "$(date +%s.%N) - $s0" | bc 2>/dev/null || echo 0)" \
        | tee -a "$logs/bench.log"
    done
  done
  ((found)) || echo "(no bench/bench_* programs built)" | tee -a "$logs/bench.log"
  # whole training steps: tokens/s, MFU, peak memory (bench/README.md), each run bounded
  lt_bin="$build/tools/luxtrain"
  if [[ -x "$lt_bin" && "${LT_BENCH_STEP:-1}" != 0 && ( -z "${LT_BENCH_ONLY:-}" || "${LT_BENCH_ONLY:-}" == bench_step ) ]]; then
    steps=("1b-full|--shape 1b" "1b-lora16|--shape 1b --lora-rank 16" "8b-lora16-recompute|--shape 8b --lora-rank 16 --recompute")
    for s in "${steps[@]}"; do
      tag="${s%%|*}" args="${s#*|}"
      echo "--- luxtrain bench step --device cuda $args --steps 5" | tee -a "$logs/bench.log"
      s0=$(date +%s.%N)
      # shellcheck disable=SC2086
      LT_SOURCE_DIR="$repo" timeout 300 "$lt_bin" bench step --device cuda $args --steps 5 \
        --json "$logs/bench_step_$tag.json" >>"$logs/bench.log" 2>&1
      rc=$?
      printf -- '--- rc %d, %.1f s\n' "$rc" "$(echo "$(date +%s.%N) - $s0" | bc 2>/dev/null || echo 0)" \
        | tee -a "$logs/bench.log"
    done
  fi
fi

# ---------------------------------------------------------------------------
say "5. results"
mkdir -p "$repo/bench/results"
date_s="$(date -u +%Y-%m-%d)"
gpu_slug="$(tr -c 'A-Za-z0-9\n' '-' <<<"${gpu_name}" | tr -s '-' | sed 's/^-//; s/-$//' | tr 'A-Z' 'a-z')"
json="$repo/bench/results/${date_s}-${gpu_slug:-nogpu}.json"
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvcc_v="$(nvcc --version 2>/dev/null | tail -1)"
python3 - "$json" "$logs" <<EOF
import json, re, sys, os
out, logs = sys.argv[1], sys.argv[2]
def read(n):
    try: return open(os.path.join(logs, n), errors="replace").read()
    except OSError: return ""
ct = read("ctest.log")
tests = []
for m in re.finditer(r"Test\s+#\d+:\s+(\S+)\s+\.+\s*(\*\*\*)?\s*([A-Za-z][A-Za-z ]*?)\s+([\d.]+) sec", ct):
    tests.append({"name": m.group(1), "status": m.group(3).strip(), "seconds": float(m.group(4))})
ops = []
for line in read("backend_ops.log").splitlines():
    m = re.match(r"\s*ok (.*?)\s+norm err (\S+)\s+max abs (\S+)", line)
    if m: ops.append({"check": m.group(1), "ok": True, "norm_err": float(m.group(2)), "max_abs": float(m.group(3))})
    m = re.match(r"FAIL (.*?): normalized error (\S+) \(tol (\S+)\)", line)
    if m: ops.append({"check": m.group(1), "ok": False, "norm_err": float(m.group(2)), "tol": float(m.group(3))})
    elif line.startswith("FAIL"): ops.append({"check": line, "ok": False})
benches, cur = [], None
for line in read("bench.log").splitlines():
    if line.startswith("--- rc "):
        if cur: cur["rc"] = int(line.split()[2].rstrip(",")); cur["seconds"] = float(line.split()[3]); benches.append(cur); cur = None
    elif line.startswith("--- "):
        cur = {"run": line[4:], "output": []}
    elif cur is not None:
        cur["output"].append(line)
res = {
    "date": "${date_s}", "gpu": "${gpu_name}", "compute_capability": "${cc}", "driver": "${driver}",
    "nvcc": "${nvcc_v}", "cuda_arch": "${arch}", "commit": "${commit}",
    "build": {"rc": ${build_rc}, "seconds": ${build_s}},
    "ctest": {"rc": ${ctest_rc}, "tests": tests},
    "backend_ops": ops, "benchmarks": benches,
}
try:  # bench_kernels --json (schema: bench/README.md)
    with open(os.path.join(logs, "bench_kernels.json")) as f: res["kernels"] = json.load(f)
except (OSError, ValueError):
    pass
import glob  # luxtrain bench step --json (schema luxtrain-bench-step/1: bench/README.md)
for p in sorted(glob.glob(os.path.join(logs, "bench_step_*.json"))):
    try:
        with open(p) as f: res.setdefault("step", []).append(json.load(f))
    except (OSError, ValueError):
        pass
with open(out + ".tmp", "w") as f: json.dump(res, f, indent=1)
os.replace(out + ".tmp", out)
print("%-34s %s" % ("test", "status"))
for t in tests: print("%-34s %-10s %7.2f s" % (t["name"], t["status"], t["seconds"]))
bad = [o for o in ops if not o["ok"]]
if ops:
    worst = max((o for o in ops if o["ok"]), key=lambda o: o["norm_err"], default=None)
    print("backend_ops: %d comparisons, %d failed%s" % (len(ops), len(bad),
          ", largest passing error %.3g (%s)" % (worst["norm_err"], worst["check"]) if worst else ""))
    for o in bad[:15]: print("  FAIL", o["check"], o.get("norm_err", ""))
for b in benches:
    print("bench %-60s rc %d %6.1f s" % (b["run"][:60], b["rc"], b["seconds"]))
    for l in b["output"][-4:]: print("    " + l)
for r in res.get("step", []):
    c, x, m = r.get("config", {}), r.get("result", {}), r.get("memory", {})
    print("step %-14s %-5s B %-3s T %-5s%s %9.0f tokens/s  MFU %5.1f%%  peak %.1f GB" % (c.get("shape"), c.get("mode"),
          c.get("micro_batch"), c.get("seq_len"), " recompute" if c.get("recompute") else "",
          x.get("tokens_per_s", 0), x.get("mfu_pct", 0), m.get("peak_bytes", 0) / 1e9))
print("results:", out)
EOF
if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
  cp "$json" "$OUT/" 2>/dev/null
  for f in configure.log build.log ctest.log backend_ops.log test_model_cuda.txt test_train_cuda.txt bench.log \
           bench_kernels.json; do
    [[ -f "$logs/$f" ]] && tail -c 4000000 "$logs/$f" >"$OUT/$f"
  done
  for f in "$logs"/bench_step_*.json; do [[ -f "$f" ]] && cp "$f" "$OUT/"; done
  echo "copied the results and logs to \$OUT"
fi
if ((build_rc != 0)); then echo "gpu-check: BUILD FAILED"; exit 1; fi
if ((ctest_rc != 0)); then echo "gpu-check: TESTS FAILED"; exit 1; fi
echo "gpu-check: OK"
