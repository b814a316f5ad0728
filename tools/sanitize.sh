#!/usr/bin/env bash
# sanitize.sh -- the whole test suite under AddressSanitizer (leaks included)
# and UndefinedBehaviorSanitizer, CPU build (the CUDA runtime is not made for
# ASan). Any report fails the test that triggered it. Open MPI's own leaks are
# suppressed by tests/lsan.supp (third-party code only).
#
# Usage: bash tools/sanitize.sh [ctest arguments, e.g. -R test_shard]
# Environment: LT_SAN_BUILD (default build-asan), LT_JOBS (default nproc).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${LT_SAN_BUILD:-$here/build-asan}"
jobs="${LT_JOBS:-$(nproc)}"
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLUXTRAIN_CUDA=OFF \
  "-DCMAKE_C_FLAGS=$san" "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined" \
  -DLUXTRAIN_TEST_TIMEOUT=1800 >/dev/null
cmake --build "$build" -j "$jobs"
# fast_unwind_on_malloc=0: Open MPI's libraries are built without frame
# pointers, so the fast unwinder stops after one frame ("<unknown module>") and
# the suppressions by library name cannot match; the slow unwinder sees them.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=86:strict_string_checks=1:detect_stack_use_after_return=1:fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$here/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# Open MPI under ASan: its shared-memory transport maps memory ASan dislikes
export OMPI_MCA_btl="self,tcp" OMPI_MCA_btl_tcp_if_include=lo
ctest --test-dir "$build" --output-on-failure -j 2 "$@"
