#!/usr/bin/env bash
# test_comm_mpi.sh -- the MPI communicator (train/lt_comm_mpi.c) with real
# processes: tests/test_comm under `mpirun -np 2`, `-np 3` and `-np 4` (every
# collective on random data, bitwise against the serial rank-order fold; once
# with tiny chunks so every message is split), then the dead-peer cases: the
# last rank hangs / exits / is killed / aborts, and the job must end within
# `timeout 60` with a message that names a rank.
# Skips (77) only when mpirun is absent or the build has no MPI communicator.
set -u

fail=0
bin_dir=$(dirname "${LT_BIN:-}")
exe="$bin_dir/../tests/test_comm"
if [ -z "${LT_BIN:-}" ] || [ ! -x "$exe" ]; then
    echo "test_comm_mpi: FAIL: test binary not found at '$exe' (LT_BIN='${LT_BIN:-}'); build the test_comm target"
    exit 1
fi
if ! command -v mpirun > /dev/null; then
    echo "test_comm_mpi: mpirun not found; skipping"
    exit 77
fi
tmp=${LT_TMP:-/tmp/test_comm_mpi.$$}
mkdir -p "$tmp"
export LT_TMP="$tmp"
# CI runs as root; Open MPI refuses that unless told.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# No network interfaces needed on one machine; keep Open MPI quiet about them.
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_base_warn_component_unused=0
mpirun_=(mpirun --oversubscribe -np)

# Is the MPI communicator built in?
if ! "$exe" kinds | grep -qw mpi; then
    echo "test_comm_mpi: built without the MPI communicator ($("$exe" kinds)); skipping"
    exit 77
fi

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs_since() { local d=$(( $(now_ms) - $1 )); printf "%d.%03d" $((d / 1000)) $((d % 1000)); }

run_ok() { # np, label, extra env...
    local np=$1 label=$2
    shift 2
    local t0=$(now_ms)
    local out
    out=$(env "$@" LT_TEST_EXPECT_WORLD="$np" timeout 300 "${mpirun_[@]}" "$np" "$exe" 2>&1)
    local rc=$?
    local dt=$(secs_since "$t0")
    local passed=$(echo "$out" | grep -c "all [0-9]* checks passed")
    if [ $rc -ne 0 ] || [ "$passed" -ne "$np" ]; then
        echo "FAIL -np $np ($label): exit $rc, $passed of $np ranks passed"
        echo "$out" | head -40
        fail=1
    else
        echo "ok   -np $np ($label): $(echo "$out" | grep "checks passed" | head -1 | sed 's/.*: //') on each rank, ${dt}s"
    fi
}

run_ok 2 "default chunks"
run_ok 3 "default chunks"
run_ok 3 "LT_COMM_CHUNK_ELEMS=5" LT_COMM_CHUNK_ELEMS=5
run_ok 2 "LT_COMM_CHUNK_ELEMS=64" LT_COMM_CHUNK_ELEMS=64
run_ok 4 "default chunks; hybrid chains in groups of 2"

# ---- dead peers: -np 3, rank 2 fails; LT_COMM_TIMEOUT_S=3 ----
dead() { # mode, regex the output must match
    local mode=$1 want=$2
    local t0=$(now_ms)
    local out
    out=$(LT_COMM_TIMEOUT_S=3 timeout 60 "${mpirun_[@]}" 3 "$exe" "dead=$mode" 2>&1)
    local rc=$?
    local dt=$(secs_since "$t0")
    if [ $rc -eq 124 ] || [ $(( $(now_ms) - t0 )) -ge 59000 ]; then
        echo "FAIL dead=$mode: the job hung (killed by timeout 60 after ${dt}s)"
        echo "$out" | head -30
        fail=1
    elif [ $rc -eq 0 ]; then
        echo "FAIL dead=$mode: the job exited 0 although rank 2 failed"
        echo "$out" | head -30
        fail=1
    elif echo "$out" | grep -q "the job survived"; then
        echo "FAIL dead=$mode: a rank ran on after its peer failed"
        echo "$out" | head -30
        fail=1
    elif ! echo "$out" | grep -v "^test_comm: rank [0-9]* simulates" | grep -Eq "$want"; then
        echo "FAIL dead=$mode: exit $rc after ${dt}s but no message matching /$want/:"
        echo "$out" | head -30
        fail=1
    else
        echo "ok   dead=$mode: exit $rc after ${dt}s: $(echo "$out" | grep -v "^test_comm: rank [0-9]* simulates" | grep -Eo "$want" | head -1)"
    fi
}

dead hang "rank [01] of 3: collective all_reduce_sum timed out after 3 s waiting for rank 2"
dead abort "luxtrain: rank 2 of 3: simulated failure in the data loader"
dead exit "Process name: \[\[[0-9]+,1\],2\]|process rank 2[^0-9]"
dead exit0 "process rank 2 with PID [0-9]+ on"
dead kill "process rank 2 with PID [0-9]+ on node .* signal 9"
dead killmid "process rank 2 with PID [0-9]+ on node .* signal 14"

exit $fail
