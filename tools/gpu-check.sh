#!/usr/bin/env bash
# gpu-check.sh -- the one command for a session that has a GPU machine, and
# its rehearsal on any Linux machine without one.
#
# On the GPU machine (nvcc, cmake, PyTorch's python3; no network, no apt,
# none of Debian's HDF5 / cJSON / OpenBLAS / Open MPI, maybe no pkg-config),
# from the repository root with .debs/ carried (tools/fetch-debs.sh fills it):
#
#   run(command="bash tools/gpu-check.sh", carry=[".debs"], timeout_s=600)
#
# Phases, each bounded by ONE deadline (LT_DEADLINE seconds from the start,
# default 540, so that the device tool's 600 s limit is never reached):
#   preflight   GPU, driver, nvcc, cuBLAS / cuDNN / NCCL, cmake, Python packages
#   deps        unpack .debs/*.deb into a prefix under /tmp (never /)
#   configure   CUDA for the GPU present (sm_90a on Hopper), MPI only if
#               mpicc exists, the prefix first in CMAKE_PREFIX_PATH, and the
#               prefix's library folders as DT_RPATH in every binary (so every
#               later command -- ctest, benchmarks, a user's shell -- finds the
#               carried libraries and their own dependencies without
#               LD_LIBRARY_PATH)
#   build       everything
#   linkcheck   every built program resolves all its libraries from the
#               prefix, the CUDA toolkit or the C / C++ / OpenMP runtime
#   gpu-tests   the ctest tests labelled "gpu" first, verbose, short timeouts
#   zero        one-process ZeRO-2/3 runs through the NCCL communicator (with
#               and without overlap, on the backend's stream and on the
#               communicator's own) and ZeRO-1, bitwise against --zero 0;
#               then QLoRA, LoRA + --train-embeddings new and full fine-tuning
#               of an F32 model, each --zero 3 bitwise against --zero 0
#   bench       GPU benchmarks only: kernels (with PyTorch / cuBLAS baselines),
#               whole model steps, `luxtrain bench step` on 1B / 8B shapes
#   tests       the rest of ctest, with what time is left
# After EVERY phase two files are refreshed in $OUT (the device tool brings
# $OUT back even when the command is killed):
#   <date>-<gpu>.json      the results (schema luxtrain-gpu-check/2, below)
#   gpu-check-logs.tar.gz  every log, each cut to its last 2 MB
# The JSON is also written to bench/results/ (the rehearsal's to the build folder). Exit status: 0 only if the
# build and every test that ran passed and no test was left unrun.
#
# --rehearse (run as root, no GPU needed; CI runs it): the same script inside
# a mount namespace that simulates the GPU machine: the files of the carried
# libraries' own packages (HDF5, cJSON, OpenBLAS, libaec / libsz, gfortran,
# ...), pkg-config, bc and Open MPI are hidden, ../shared is absent, python3
# is the test virtual environment (tools/requirements-test.txt pins the GPU
# image's tokenizers), and $OUT is a fresh folder. It then checks that $OUT
# holds exactly the two files above, within the device tool's limits.
#
# Options: --rehearse, --no-bench, --force-debs (use .debs even where the
# system has the libraries). Environment: LT_DEADLINE (540), LT_DEPS_PREFIX
# (/tmp/lt-deps), LT_BUILD_DIR (build-gpu), LT_SHARED_DIR (real tokenizer
# files; ./shared or ../shared), LT_CUDA_ARCH (override), LT_TEST_TIMEOUT
# (per test, 150 s), LT_TESTS (ctest -R regex for the "tests" phase),
# LT_BENCH_KERNELS=full (all model sizes), LT_BENCH_STEP=0 (skip bench step).
set -uo pipefail
set -a # every variable is exported: each phase runs under timeout(1) in a child bash

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
t_start=$(date +%s)
rehearse=0 bench=1 force_debs=0 in_sim=0
while (($#)); do
  case "$1" in
    --rehearse) rehearse=1 ;;
    --no-bench) bench=0 ;;
    --force-debs) force_debs=1 ;;
    --in-simulation) in_sim=1 ;; # internal: the rehearsal's second half
    *) echo "gpu-check: unknown option $1 (see the header of tools/gpu-check.sh)" >&2; exit 2 ;;
  esac
  shift
done

multiarch="$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"

# ---------------------------------------------------------------------------
# The rehearsal: set up the simulation, re-run this script inside it, check $OUT.
if ((rehearse && !in_sim)); then
  if [[ "$(id -u)" != 0 ]] || ! command -v unshare >/dev/null; then
    echo "gpu-check --rehearse: needs root and unshare (util-linux)" >&2; exit 2
  fi
  shopt -s nullglob
  debs=("$repo"/.debs/*.deb)
  if ((${#debs[@]} == 0)) || [[ ! -f "$repo/.debs/PACKAGES" ]]; then
    echo "gpu-check --rehearse: no .debs/ here: run tools/fetch-debs.sh first" >&2; exit 2
  fi
  py="${LT_REHEARSE_PYTHON:-$repo/.venv/bin/python}"
  if ! "$py" -c 'import tokenizers' 2>/dev/null; then
    echo "gpu-check --rehearse: $py lacks tokenizers: run tools/setup-deps.sh first" >&2; exit 2
  fi
  sim="$(mktemp -d /tmp/lt-rehearse.XXXXXX)"
  rm -rf "${LT_BUILD_DIR:-$repo/build-rehearse}" # a fresh build, as on the GPU
  mkdir -p "$sim/out" "$sim/empty" "$sim/bin"
  # What the GPU image lacks: every file of the carried packages that are not
  # part of a base system, as installed here (dpkg -L), hidden behind an empty
  # file or folder; the tools below hidden the same way.
  hide="$sim/hidden.txt"
  : >"$hide"
  while read -r pkg; do
    case "$pkg" in
      *hdf5*|*cjson*|*openblas*|*blas*|*lapack*|libsz*|libaec*|*gfortran*|libquadmath*) ;;
      *) continue ;;
    esac
    dpkg -L "$pkg" 2>/dev/null | while read -r f; do
      [[ -f "$f" && ! -L "$f" ]] && readlink -f "$f"
    done >>"$hide"
  done <"$repo/.debs/PACKAGES"
  # /usr/bin without the tools the GPU image lacks: a folder of links to the
  # real /usr/bin, mounted over /usr/bin. Inside the namespace the real /usr
  # is bound at $sim/usr, so a program reached through a link still finds
  # its own files relative to itself (cmake ../share, gcc ../lib/gcc).
  mkdir -p "$sim/usrbin" "$sim/usr"
  for f in /usr/bin/*; do
    case "${f##*/}" in
      pkg-config|pkgconf|*-pkg-config|bc|mpicc|mpicxx|mpirun|mpiexec|orterun|opal_wrapper) continue ;;
    esac
    ln -s "$sim/usr/bin/${f##*/}" "$sim/usrbin/${f##*/}"
  done
  # python3 is the test venv (the GPU image's python3 has tokenizers, h5py, numpy)
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$py" >"$sim/bin/python3"
  chmod +x "$sim/bin/python3"
  ln -s python3 "$sim/bin/python"
  echo "gpu-check --rehearse: hiding $(sort -u "$hide" | wc -l) files; \$OUT=$sim/out"
  # shellcheck disable=SC2016
  unshare --mount --propagation private bash -c '
    set -u
    sim="$1"
    mount --bind /usr "$sim/usr" || { echo "could not bind /usr"; exit 1; }
    sort -u "$sim/hidden.txt" | while read -r f; do
      for g in "$f" "$sim$f"; do mount --bind /dev/null "$g" 2>/dev/null || echo "could not hide $g"; done
    done
    for d in /usr/include/hdf5 /usr/lib/'"$multiarch"'/hdf5 /usr/include/'"$multiarch"'/openblas-pthread \
             /usr/lib/'"$multiarch"'/openblas-pthread /usr/include/cjson /usr/lib/'"$multiarch"'/openmpi; do
      [[ -d "$d" ]] && mount --bind "$sim/empty" "$d" && mount --bind "$sim/empty" "$sim$d"
    done
    mount --bind "$sim/usrbin" /usr/bin || { echo "could not hide tools"; exit 1; }
    shift
    exec "$@"' _ "$sim" \
    env PATH="$sim/bin:$PATH" OUT="$sim/out" LT_SHARED_DIR="$sim/no-shared" \
        LT_CUDA_ARCH="${LT_CUDA_ARCH:-90a}" LT_DEPS_PREFIX="${LT_DEPS_PREFIX:-/tmp/lt-deps-rehearse}" \
        LT_BUILD_DIR="${LT_BUILD_DIR:-$repo/build-rehearse}" \
        bash "$repo/tools/gpu-check.sh" --in-simulation --rehearse \
        $( ((bench)) || echo --no-bench)
  rc=$?
  echo
  echo "=== gpu-check --rehearse: checking \$OUT ($sim/out)"
  bad=0
  mapfile -t files < <(cd "$sim/out" && find . -mindepth 1 | sed 's|^\./||' | sort)
  printf '  %s\n' "${files[@]}"
  if ((${#files[@]} != 2)); then echo "  FAIL: expected exactly 2 files in \$OUT, found ${#files[@]}"; bad=1; fi
  for f in "${files[@]}"; do
    [[ "$f" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "  FAIL: $f: name not allowed by the device tool"; bad=1; }
    [[ -f "$sim/out/$f" ]] || { echo "  FAIL: $f is not a plain file"; bad=1; continue; }
    sz=$(stat -c %s "$sim/out/$f")
    ((sz <= 16 * 1024 * 1024)) || { echo "  FAIL: $f is $sz bytes (> 16 MiB)"; bad=1; }
  done
  json="$(ls "$sim"/out/*.json 2>/dev/null | head -1)"
  if [[ -z "$json" ]] || ! "$py" "$repo/tools/gpu_check_report.py" --verify "$json"; then
    echo "  FAIL: no valid results JSON in \$OUT"; bad=1
  fi
  tar tzf "$sim/out/gpu-check-logs.tar.gz" >/dev/null 2>&1 || { echo "  FAIL: gpu-check-logs.tar.gz unreadable"; bad=1; }
  if ((bad == 0)); then echo "gpu-check --rehearse: \$OUT OK"; fi
  if ((rc != 0 || bad != 0)); then echo "gpu-check --rehearse: FAILED (script rc $rc)"; exit 1; fi
  echo "gpu-check --rehearse: OK"
  rm -rf "$sim"
  exit 0
fi

# ---------------------------------------------------------------------------
# The check itself (on the GPU machine, or inside the simulation).
# The rehearsal runs on a machine with far fewer cores (2 in CI against 16):
# its deadline and every phase's cap are scaled by LT_REHEARSE_SCALE (4).
scale=1
((rehearse)) && scale=${LT_REHEARSE_SCALE:-4}
deadline=$((t_start + ${LT_DEADLINE:-540} * scale))
reserve=20 # seconds kept back at the end for the results and the archive
prefix="${LT_DEPS_PREFIX:-/tmp/lt-deps}"
build="${LT_BUILD_DIR:-$repo/build-gpu}"
logs="$build/gpu-check-logs"
rm -rf "$logs"
mkdir -p "$logs"
: >"$logs/phases.tsv"
jobs="$(nproc 2>/dev/null || echo 4)"
py="$(command -v python3 || echo python3)"
gpu_name="none" cc="" driver=""
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu_name="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
  cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1)"
  driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
fi
[[ -n "$gpu_name" ]] || gpu_name="none"
date_s="$(date -u +%Y-%m-%d)"
gpu_slug="$(tr -c 'A-Za-z0-9\n' '-' <<<"$gpu_name" | tr -s '-' | sed 's/^-//; s/-$//' | tr 'A-Z' 'a-z')"
((rehearse)) && gpu_slug="rehearsal"
results="$repo/bench/results/${date_s}-${gpu_slug:-nogpu}.json"
((rehearse)) && results="$build/${date_s}-${gpu_slug}.json" # not a GPU result: stays in the build folder
mkdir -p "$(dirname "$results")"
ok_all=1
now() { date +%s; }
left() { echo $((deadline - reserve - $(now))); }
say() { printf '\n=== gpu-check [%3ds, %3ds left]: %s\n' "$(($(now) - t_start))" "$(left)" "$*"; }

# results JSON + log archive, into bench/results and $OUT (atomically: a
# kill between two phases leaves the previous complete pair)
publish() {
  "$py" "$repo/tools/gpu_check_report.py" --logs "$logs" --out "$results" \
    --meta "date=$date_s" "gpu=$gpu_name" "compute_capability=$cc" "driver=$driver" \
    "rehearsal=$rehearse" "commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "deadline_s=$((${LT_DEADLINE:-540} * scale))" "elapsed_s=$(($(now) - t_start))" >"$logs/report.txt" 2>&1 ||
    echo "gpu-check: results JSON not written (see report.txt in the archive)"
  if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
    local tmp
    tmp="$(mktemp -d /tmp/lt-gpucheck-pack.XXXXXX)"
    mkdir -p "$tmp/gpu-check-logs"
    for f in "$logs"/*; do [[ -f "$f" ]] && tail -c 2000000 "$f" >"$tmp/gpu-check-logs/$(basename "$f")"; done
    tar czf "$tmp/a.tar.gz" -C "$tmp" gpu-check-logs && mv -f "$tmp/a.tar.gz" "$OUT/gpu-check-logs.tar.gz"
    [[ -f "$results" ]] && cp -f "$results" "$OUT/.results.tmp" && mv -f "$OUT/.results.tmp" "$OUT/$(basename "$results")"
    rm -rf "$tmp"
  fi
}

# phase NAME CAP_SECONDS CMD...: run CMD with at most CAP seconds (and never
# past the deadline), output to logs/NAME.log and the terminal, status to
# phases.tsv, then publish.
phase() {
  local name="$1" cap="$2"; shift 2
  local t rc s0
  cap=$((cap * scale))
  t=$(left)
  ((cap < t)) && t=$cap
  if ((t < 5)); then
    say "$name: not run (deadline)"
    printf '%s\t%s\t%s\n' "$name" "deadline" 0 >>"$logs/phases.tsv"
    ok_all=0
    publish
    return 124
  fi
  say "$name (at most ${t}s)"
  s0=$(now)
  timeout -k 5 "$t" bash -c '"$@"' _ "$@" 2>&1 | tee "$logs/$name.log"
  rc=${PIPESTATUS[0]}
  local st="ok"
  ((rc == 124 || rc == 137)) && st="timeout"
  ((rc != 0 && rc != 124 && rc != 137)) && st="failed"
  printf '%s\t%s\t%s\t%s\n' "$name" "$st" "$(($(now) - s0))" "$rc" >>"$logs/phases.tsv"
  echo "--- $name: $st (rc $rc, $(($(now) - s0)) s)"
  publish
  return "$rc"
}

# --- preflight -------------------------------------------------------------
preflight() {
  echo "host: $(uname -srm), $(nproc) cores, $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}')"
  echo "rehearsal: $rehearse"; echo "PATH: $PATH"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  else
    echo "nvidia-smi: not found (no GPU)"
  fi
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -2 | tr '\n' ' ')"
  echo "cmake: $(cmake --version 2>/dev/null | head -1); ninja: $(ninja --version 2>/dev/null || echo none)"
  echo "gcc: $(gcc -dumpfullversion 2>/dev/null); pkg-config: $(command -v pkg-config || echo none); mpicc: $(command -v mpicc || echo none)"
  local cuda_inc
  cuda_inc="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")" 2>/dev/null)/include"
  local sp
  sp="$("$py" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)"
  hdr() { # hdr NAME FILE MACRO...: version macros from the first header found
    local n="$1" f="$2"; shift 2
    local d
    for d in "$cuda_inc" "$cuda_inc/../targets/x86_64-linux/include" /usr/include /usr/local/include \
             $(for s in $sp; do echo "$s"/nvidia/*/include; done); do
      if [[ -f "$d/$f" ]]; then
        local v="" m
        for m in "$@"; do v+="$(awk -v m="$m" '$1 == "#define" && $2 == m {print $3; exit}' "$d/$f")."; done
        echo "$n: ${v%.} ($d/$f)"; return
      fi
    done
    echo "$n: header $f not found"
  }
  hdr cuBLAS cublas_api.h CUBLAS_VER_MAJOR CUBLAS_VER_MINOR CUBLAS_VER_PATCH
  hdr cuDNN cudnn_version.h CUDNN_MAJOR CUDNN_MINOR CUDNN_PATCHLEVEL
  hdr NCCL nccl.h NCCL_MAJOR NCCL_MINOR NCCL_PATCH
  echo "python: $py"
  "$py" - <<'EOF'
import sys, importlib
print("  python", sys.version.split()[0])
for m in ("torch", "transformers", "tokenizers", "peft", "safetensors", "h5py", "numpy"):
    try:
        mod = importlib.import_module(m)
        extra = ""
        if m == "torch":
            extra = " (cuda %s, device %s)" % (mod.version.cuda, mod.cuda.get_device_name(0) if mod.cuda.is_available() else "none")
        print("  %-13s %s%s" % (m, getattr(mod, "__version__", "?"), extra))
    except Exception as e:
        print("  %-13s missing (%s)" % (m, type(e).__name__))
EOF
  echo "carried: $(ls "$repo"/.debs/*.deb 2>/dev/null | wc -l) .deb files, $(du -sh "$repo/.debs" 2>/dev/null | cut -f1)"
  df -h /tmp "$repo" 2>/dev/null | tail -n +2
}
export -f preflight
phase preflight 30 preflight

# --- dependencies ------------------------------------------------------------
use_debs=1
if ((!rehearse && !force_debs)) && [[ -f /usr/include/hdf5/serial/hdf5.h && -f /usr/include/cjson/cJSON.h ]] &&
   ls /usr/lib/"$multiarch"/libopenblas.so* >/dev/null 2>&1; then
  use_debs=0
fi
ml="$prefix/usr/lib/$multiarch"
rpath_dirs="$ml:$ml/hdf5/serial:$ml/openblas-pthread:$prefix/lib/$multiarch"
deps() {
  if ((!use_debs)); then echo "the system has HDF5, cJSON and OpenBLAS: using them"; return 0; fi
  shopt -s nullglob
  local debs=("$repo"/.debs/*.deb)
  if ((${#debs[@]} == 0)); then
    echo "gpu-check: no .debs/*.deb here and the libraries are missing." >&2
    echo "  Run tools/fetch-debs.sh on the development machine and carry .debs." >&2
    return 1
  fi
  rm -rf "$prefix"
  mkdir -p "$prefix"
  local d
  for d in "${debs[@]}"; do dpkg-deb -x "$d" "$prefix" || { echo "gpu-check: dpkg-deb -x $d failed" >&2; return 1; }; done
  # what Debian's alternatives would have linked (no maintainer script ran)
  [[ -e "$ml/libopenblas.so.0" ]] || ln -sf openblas-pthread/libopenblas.so.0 "$ml/libopenblas.so.0"
  [[ -e "$ml/libopenblas.so" ]] || ln -sf openblas-pthread/libopenblas.so "$ml/libopenblas.so"
  echo "unpacked ${#debs[@]} packages into $prefix ($(du -sh "$prefix" | cut -f1))"
}
export -f deps
phase deps 60 deps || ok_all=0

# --- configure and build ------------------------------------------------------
if [[ -n "${LT_CUDA_ARCH:-}" ]]; then arch="$LT_CUDA_ARCH"
elif [[ "$cc" == 9.0 ]]; then arch="90a" # Hopper: wgmma / setmaxnreg need sm_90a
elif [[ -n "$cc" ]]; then arch="native"
else arch="80;90"; fi
mpi=ON
command -v mpicc >/dev/null 2>&1 || mpi=OFF
shared="${LT_SHARED_DIR:-}"
[[ -z "$shared" && -d "$repo/shared/tokenizers" ]] && shared="$repo/shared"
[[ -z "$shared" ]] && shared="$repo/../shared"
configure() {
  local gen=() extra=()
  command -v ninja >/dev/null 2>&1 && [[ ! -f "$build/CMakeCache.txt" ]] && gen=(-G Ninja)
  if ((use_debs)); then
    # DT_RPATH (not RUNPATH): it is searched for the libraries' own
    # dependencies too (libhdf5 -> libsz -> libaec), in every later command
    extra=("-DCMAKE_PREFIX_PATH=$prefix/usr"
           "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags -Wl,-rpath,$rpath_dirs")
  fi
  echo "CUDA arch $arch; MPI $mpi; python $py; shared $shared"
  cmake -S "$repo" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DLUXTRAIN_CUDA=ON \
    "-DCMAKE_CUDA_ARCHITECTURES=$arch" "-DLUXTRAIN_MPI=$mpi" "-DLUXTRAIN_PYTHON=$py" \
    "-DLUXTRAIN_SHARED_DIR=$shared" "-DLUXTRAIN_TEST_TIMEOUT=${LT_TEST_TIMEOUT:-150}" "${extra[@]}"
}
export -f configure
build_ok=0
if phase configure 90 configure && phase build 400 cmake --build "$build" -j "$jobs"; then build_ok=1; else ok_all=0; fi

# every program resolves every library from the prefix, the CUDA toolkit or
# the compiler's runtime, with no LD_LIBRARY_PATH
linkcheck() {
  local bad=0 f line lib path
  local -a progs=("$build/tools/luxtrain" "$build"/tests/test_* "$build"/bench/bench_*)
  for f in "${progs[@]}"; do
    [[ -x "$f" && -f "$f" ]] || continue
    while read -r line; do
      lib="${line%% *}" path=""
      [[ "$line" == *"=>"* ]] && path="$(awk '{print $3}' <<<"$line")"
      if [[ "$line" == *"not found"* ]]; then echo "FAIL $(basename "$f"): $lib not found"; bad=1; continue; fi
      [[ -z "$path" ]] && continue # the loader and linux-vdso
      case "$lib" in
        libc.so.*|libm.so.*|libdl.so.*|librt.so.*|libpthread.so.*|libresolv.so.*|libnss_*|libutil.so.*) continue ;;
        libgcc_s.so.*|libstdc++.so.*|libgomp.so.*) continue ;;
        libcuda.so.*|libcudart.so.*|libcublas*|libnccl*|libcudnn*|libnvJitLink*|libmpi*|libopen-*|libhwloc*|libevent*|libpmix*) continue ;;
      esac
      if ((use_debs)) && [[ "$path" != "$prefix"/* ]]; then
        echo "FAIL $(basename "$f"): $lib resolves to $path, outside the carried prefix"; bad=1
      fi
    done < <(env -u LD_LIBRARY_PATH ldd "$f" 2>&1)
  done
  ((bad)) && return 1
  echo "every program resolves its libraries without LD_LIBRARY_PATH (${#progs[@]} checked)"
}
export -f linkcheck
if ((build_ok)); then phase linkcheck 30 linkcheck || ok_all=0; fi

# --- tests: the GPU ones first ---------------------------------------------------
if ((build_ok)); then
  export LT_TEST_VERBOSE=1 # test_backend_ops prints every comparison (into the results)
  phase gpu-tests 240 ctest --test-dir "$build" -L gpu -V -j 2 || ok_all=0
  unset LT_TEST_VERBOSE
  for t in test_model_cuda test_train_cuda; do
    [[ -f "$build/test-tmp/$t/report.txt" ]] && cp "$build/test-tmp/$t/report.txt" "$logs/$t.report.txt"
  done
fi

# --- ZeRO through the NCCL communicator on one GPU ---------------------------------
# `luxtrain train` on the sample model, one process: --zero 2 and --zero 3 go
# through the NCCL communicator (world 1), which `train` puts on the CUDA
# backend's stream (set_stream: the starts wait for the compute with an
# event, wait_req is an event wait; the run must say so): the reductions and
# the prefetched gathers queued on the communicator's stream, again with
# LT_OVERLAP=0 (the blocking calls), and --zero 3 with LT_COMM_STREAM=0 (no
# set_stream: every NCCL call first synchronises the device); --zero 1 runs
# without a communicator. Every step's loss and grad norm and the final
# weights must equal the run without ZeRO bitwise (so the runs equal each
# other). One micro-batch per step (of 2 sequences): without a communicator
# the micro-batches accumulate in place, another summation order than
# ZeRO's fold. Then three pairs, each --zero 3 against the same run with
# --zero 0 (losses, grad norms and the named output files bitwise):
#   qlora     QLoRA (--quantize nf4): the NF4 weights sharded in whole blocks,
#             their bytes all-gathered as LT_U8 (ncclUint8), every block's
#             absmax all-gathered at setup; the final adapter
#   emb-new   LoRA + --train-embeddings new on the `vocab add` model (the added
#             rows train in the sharded tables, gathered by
#             lt_trainer_gather_tables before the export): the step-2
#             checkpoint's adapter and the final one
#   f32-full  full fine-tuning of an F32 copy of the (BF16) sample model whose
#             values have their low 16 bits set, so that ZeRO-3's deferred load
#             (lt_model_load_range, part by part) must round them to the bf16
#             parameters on the device exactly as the whole load does; the
#             final model (written in the source's dtype, F32). The sample
#             model itself is BF16: the runs above load BF16 files.
# The rehearsal (no GPU) runs the same lines on the CPU backend.
zero_check() {
  local lt_bin="$build/tools/luxtrain" dev=cuda d rc=0 spec name args ov cs ref files got want f has
  local on_stream="communicator nccl queues on the cuda backend's stream"
  local lora="--lora-rank 4 --lora-alpha 8 --lora-dropout 0.1"
  ((rehearse)) && dev=cpu
  d="$(mktemp -d /tmp/lt-zero-check.XXXXXX)"
  if ! { "$lt_bin" tokenize --tokenizer "$repo/data/sample/model" --input "$repo/data/sample/luxit_sample.jsonl" \
           --out "$d/shards" --quiet &&
         "$lt_bin" vocab add --model "$repo/data/sample/model" --tokens "$repo/tests/fixtures/vocab/tokens_lb.txt" \
           --out "$d/lb" &&
         "$lt_bin" tokenize --tokenizer "$d/lb" --input "$repo/data/sample/text.jsonl" --out "$d/shards-lb" --quiet &&
         zero_f32_copy "$repo/data/sample/model" "$d/f32"; } >"$d/setup.txt" 2>&1; then
    echo "zero-check: FAIL setup (tokenize / vocab add / f32 copy): $(tail -3 "$d/setup.txt" | tr '\n' ' ')"
    rm -rf "$d"; return 1
  fi
  local base="--model $repo/data/sample/model --data $d/shards/train-00000.h5"
  local lb="--model $d/lb --data $d/shards-lb/train-00000.h5 --epochs 0"
  local f32="--model $d/f32 --data $d/shards/train-00000.h5"
  local fin=final/model.safetensors ad=final/adapter_model.safetensors
  local ck=checkpoints/step-000002/adapter/adapter_model.safetensors
  # name | args | LT_OVERLAP | LT_COMM_STREAM | reference run | files compared with it
  for spec in "z0|$base --zero 0|1|1||" "z1|$base --zero 1|1|1|z0|$fin" "z2|$base --zero 2|1|1|z0|$fin" \
              "z2-blocking|$base --zero 2|0|1|z0|$fin" "z3|$base --zero 3|1|1|z0|$fin" \
              "z3-blocking|$base --zero 3|0|1|z0|$fin" "z3-own-stream|$base --zero 3|1|0|z0|$fin" \
              "qlora-z0|$base $lora --quantize nf4 --zero 0|1|1||" \
              "qlora-z3|$base $lora --quantize nf4 --zero 3|1|1|qlora-z0|$ad" \
              "emb-new-z0|$lb $lora --train-embeddings new --save-every 2 --zero 0|1|1||" \
              "emb-new-z3|$lb $lora --train-embeddings new --save-every 2 --zero 3|1|1|emb-new-z0|$ck $ad" \
              "f32-full-z0|$f32 --zero 0|1|1||" "f32-full-z3|$f32 --zero 3|1|1|f32-full-z0|$fin"; do
    IFS='|' read -r name args ov cs ref files <<<"$spec"
    # shellcheck disable=SC2086
    if ! LT_OVERLAP=$ov LT_COMM_STREAM=$cs timeout 120 "$lt_bin" train \
        --seq-len 64 --micro-batch 2 --grad-accum 1 --max-steps 4 --lr 2e-3 --warmup-steps 1 --save-every 0 \
        --eval-every 0 --log-every 100 --device "$dev" $args --out "$d/$name" >"$d/$name.txt" 2>&1; then
      echo "zero-check: FAIL $name: $(tail -2 "$d/$name.txt" | tr '\n' ' ')"; rc=1; continue
    fi
    [[ -z "$ref" ]] && continue
    got="$(grep -o '"step": [0-9]*\|"loss": [^,]*\|"grad_norm": [^,]*' "$d/$name/metrics.jsonl")"
    want="$(grep -o '"step": [0-9]*\|"loss": [^,]*\|"grad_norm": [^,]*' "$d/$ref/metrics.jsonl" 2>/dev/null)"
    if [[ -z "$want" || "$got" != "$want" ]]; then
      echo "zero-check: FAIL $name: losses / grad norms differ from $ref"; rc=1; continue
    fi
    for f in $files; do
      cmp -s "$d/$name/$f" "$d/$ref/$f" || { echo "zero-check: FAIL $name: $f differs from $ref's"; rc=1; continue 2; }
    done
    if [[ "$dev" == cuda && "$args" == *"--zero "[23]* ]] && ! grep -q "communicator nccl" "$d/$name.txt"; then
      echo "zero-check: FAIL $name: not run through the NCCL communicator"; rc=1; continue
    fi
    has=0
    grep -q "$on_stream" "$d/$name.txt" && has=1
    if [[ "$dev" == cuda && "$args" == *"--zero "[23]* ]] && ((has != cs)); then
      echo "zero-check: FAIL $name: LT_COMM_STREAM=$cs, but '$on_stream' printed $has times"; rc=1; continue
    fi
    # full fine-tuning overlapped: some reductions must have run non-blocking
    # (the LoRA / QLoRA runs print their count, not checked)
    if [[ "$dev" == cuda && "$args" == *"--zero "[23]* && "$args" != *--lora-rank* ]] && ((ov)) &&
       ! grep -Eq "ZeRO-[23]: [1-9][0-9]* gradient reductions ran non-blocking" "$d/$name.txt"; then
      echo "zero-check: FAIL $name: no non-blocking reduction"; rc=1; continue
    fi
    echo "zero-check: ok   $name on $dev: $(grep -c '"loss"' "$d/$name/metrics.jsonl") steps and $files" \
         "bitwise equal to $ref; $(grep -ho 'ZeRO-[23][^;]*non-blocking\|[0-9]* prefetched' "$d/$name.txt" | tr '\n' ' ')" \
         "$( ((has)) && echo "(NCCL on the backend's stream)")"
  done
  rm -rf "$d"
  return $rc
}
# zero_f32_copy SRC DST: the model folder SRC with its BF16 tensors as F32,
# the low 16 bits of every normal value set from its index (values a bf16
# parameter must round), the rest copied as is
zero_f32_copy() {
  mkdir -p "$2" && cp "$1"/*.json "$2"/ && "$py" - "$1/model.safetensors" "$2/model.safetensors" <<'EOF'
import json, struct, sys
import numpy as np
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
body, out, parts, off, k32 = raw[8 + n:], {}, [], 0, 0
for k, t in head.items():
    if k == "__metadata__":
        out[k] = t
        continue
    b = body[t["data_offsets"][0]:t["data_offsets"][1]]
    if t["dtype"] == "BF16":
        u = np.frombuffer(b, dtype="<u2").astype(np.uint32) << 16
        low = (np.arange(u.size, dtype=np.uint32) * np.uint32(40503) + np.uint32(12345)) & np.uint32(0xFFFF)
        normal = (u & np.uint32(0x7F800000)) != 0
        b = np.where(normal, u | low, u).astype("<u4").tobytes()
        t = dict(t, dtype="F32")
        k32 += 1
    out[k] = dict(t, data_offsets=[off, off + len(b)])
    parts.append(b)
    off += len(b)
if not k32:
    sys.exit("f32 copy: no BF16 tensor in " + sys.argv[1])
h = json.dumps(out).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[2], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(parts))
print("f32 copy: %d of %d tensors widened, %d bytes" % (k32, len(out) - ("__metadata__" in out), off))
EOF
}
export -f zero_check zero_f32_copy
if ((build_ok)); then phase zero 150 zero_check || ok_all=0; fi

# --- GPU benchmarks ---------------------------------------------------------------
gpu_bench() {
  local lt_bin="$build/tools/luxtrain" kq="--quick" rc=0 s
  [[ "${LT_BENCH_KERNELS:-quick}" == full ]] && kq=""
  if [[ -x "$build/bench/bench_kernels" ]]; then
    echo "--- bench_kernels --device cuda $kq"
    # shellcheck disable=SC2086
    LT_SOURCE_DIR="$repo" timeout 150 "$build/bench/bench_kernels" --device cuda $kq --json "$logs/bench_kernels.json" || rc=1
  fi
  if [[ -x "$build/bench/bench_model_step" ]]; then
    for s in "2 20 50" "16 256 20"; do
      echo "--- bench_model_step llama $s cuda"
      # shellcheck disable=SC2086
      timeout 60 "$build/bench/bench_model_step" "$repo/tests/fixtures/models/llama" $s cuda || rc=1
    done
  fi
  if [[ -x "$lt_bin" && "${LT_BENCH_STEP:-1}" != 0 ]]; then
    for s in "1b-full|--shape 1b" "1b-lora16|--shape 1b --lora-rank 16" \
             "8b-lora16-recompute|--shape 8b --lora-rank 16 --recompute"; do
      echo "--- luxtrain bench step --device cuda ${s#*|} --steps 5"
      # shellcheck disable=SC2086
      LT_SOURCE_DIR="$repo" timeout 90 "$lt_bin" bench step --device cuda ${s#*|} --steps 5 \
        --json "$logs/bench_step_${s%%|*}.json" || rc=1
    done
  fi
  return $rc
}
export -f gpu_bench
if ((build_ok && bench)); then phase bench 300 gpu_bench; fi # a failed benchmark is reported, not fatal

# --- the rest of the tests ---------------------------------------------------------
if ((build_ok)); then
  rx=()
  [[ -n "${LT_TESTS:-}" ]] && rx=(-R "$LT_TESTS")
  phase tests 300 ctest --test-dir "$build" -LE gpu --output-on-failure -j "$jobs" "${rx[@]}" || ok_all=0
fi

say "done"
cat "$logs/report.txt" 2>/dev/null
echo "results: $results"
((ok_all)) || { echo "gpu-check: FAILED (see phases above)"; exit 1; }
echo "gpu-check: OK"
