#!/usr/bin/env bash
# selftest.sh EXE -- the stand-in test can fail: test_comm_nccl_fake under
# `mpirun -np 2` on a broken fake device (FAKEGPU_FAULT, lt_fakegpu.c) must
# fail with the expected message, and pass on the working one.
#   nowait    stream waits on events ignored        -> a result check fails (or a deadlock)
#   droprecv  one ncclRecv delivers nothing          -> a result check fails
#   stuck     rank 0 never posts its 20th NCCL op    -> the stall report
# and with a hung peer (no fault; `hang`, `hang-chain`) the communicator's own
# timeout ends the job.
set -u
exe=${1:?usage: selftest.sh test_comm_nccl_fake}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_base_warn_component_unused=0 OMP_NUM_THREADS=1
export FAKEGPU_TIMEOUT_S=5 FAKEGPU_SLOW=1
fail=0
run() { # fault, regex the output must match, expected: pass|fail
    local out rc
    out=$(env FAKEGPU_FAULT="$1" timeout 300 mpirun --oversubscribe -np 2 "$exe" 2>&1)
    rc=$?
    if [ "$3" = pass ]; then
        if [ $rc -ne 0 ] || [ "$(echo "$out" | grep -c 'checks passed')" -ne 2 ]; then
            echo "FAIL: the working stand-in: exit $rc"; echo "$out" | tail -20; fail=1
        else echo "ok   the working stand-in passes"; fi
    elif [ $rc -eq 0 ] || [ $rc -eq 124 ] || ! echo "$out" | grep -Eq "$2"; then
        echo "FAIL: fault $1: exit $rc, no /$2/ (the test did not notice the broken device)"
        echo "$out" | tail -20; fail=1
    else
        echo "ok   fault $1: exit $rc: $(echo "$out" | grep -Eo "$2" | head -1)"
    fi
}
run "" "" pass
run nowait "not bitwise equal|checks FAILED|fakegpu: no progress" fail
run droprecv "not bitwise equal|checks FAILED" fail
run stuck "fakegpu: no progress for [0-9]+ s with work queued \(deadlock\?\) on rank 0" fail

# a hung peer (the test's `hang` modes, no fault): the others' sum on the
# device, or a chain's wait_req, must end the job within LT_COMM_TIMEOUT_S
# with the timeout message
hung() { # mode, regex
    local out rc
    out=$(LT_COMM_TIMEOUT_S=2 FAKEGPU_TIMEOUT_S=60 timeout 120 mpirun --oversubscribe -np 3 "$exe" "$1" 2>&1)
    rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ] || echo "$out" | grep -q "survived" || ! echo "$out" | grep -Eq "$2"; then
        echo "FAIL: $1: exit $rc, no /$2/"; echo "$out" | tail -20; fail=1
    else
        echo "ok   $1: exit $rc: $(echo "$out" | grep -Eo "$2" | head -1)"
    fi
}
hung hang "rank [01] of 3: collective all_reduce_sum timed out after 2 s"
hung hang-chain "rank [01] of 3: collective reduce_scatter_sum_ordered \\(hybrid chain; its wait_req\\) timed out after 2 s"
exit $fail
