#!/usr/bin/env bash
# test_train_zero.sh -- the ZeRO stages of `luxtrain train` under mpirun (MPI
# communicator, CPU backend, the sample model, a few steps so it stays fast):
#   1. --zero 1 (the flat gradient reduce-scattered per group into this
#      rank's shard of the accumulator) on 2 and 3 ranks, full and LoRA,
#      --zero 2 (gradients reduce-scattered per group from a pool, no
#      full-size gradient buffer) and --zero 3 (parameters sharded too,
#      gathered per group before its forward and backward) on 1, 2 and 3
#      ranks -- the sample model's sizes do not divide evenly by 3 -- full
#      fine-tuning (also with --recompute), LoRA (with dropout; ZeRO-3: over
#      a sharded frozen base) and LoRA + --train-embeddings all (the tied
#      embedding's group; ZeRO-2, and ZeRO-3 on 1, 2, 3 ranks: the table
#      sharded, gathered again before rank 0 writes the adapter): every step's
#      loss and grad norm and the final weights' bytes EQUAL one process with
#      the same global batch;
#      ZeRO-3 runs prefetch (the run counts gathers started ahead of use) and
#      the reductions of ZeRO-1/2/3 run non-blocking (counted too); with
#      LT_OVERLAP=0 (blocking, no prefetch; 0 counted) the same bits; a bad LT_OVERLAP or
#      LT_COMM_STREAM is refused by name;
#   1e. ZeRO-3 with LoRA + --train-embeddings new (the rows `vocab add`
#      added train, the others get a zero gradient): 1, 2, 3 ranks equal one
#      process (losses, grad norms, final/ and step-4/adapter bytes); the
#      3-rank sharded checkpoint's table equals one process's, its other rows
#      the base model's;
#   1b. --shard-group N (HYBRID_SHARD: sharded inside groups of N
#      consecutive ranks, replicated across them): 4 ranks in groups of 2
#      (ZeRO-1, 2 and 3; their reductions non-blocking, chained across the
#      groups, and with LT_OVERLAP=0 blocking) and 6 in groups of 3 (ZeRO-1)
#      and of 2 (ZeRO-2) equal 1 rank x 12 bitwise; a world size that N does not divide is
#      refused by name;
#   1c. ZeRO-3 checkpoints (the parts gathered tensor by tensor) resume on
#      another world size (3 ranks -> 2) to the uninterrupted final weights;
#   1d. several ranks (full): step-N/hf and final/ are the sharded checkpoint
#      exported by rank 0 alone (the offline export, nothing gathered); rank
#      0's export failing fails the run, saying why (the others name rank 0);
#   1f. QLoRA (--quantize nf4) under ZeRO-3 on 1, 2 and 3 ranks (and 2
#      with LT_OVERLAP=0): losses, grad norms and the final adapter equal one
#      QLoRA process without ZeRO; each rank keeps 1/N of the NF4 weights; a
#      QLoRA ZeRO-3 checkpoint resumes on another world size (3 -> 2 ranks);
#   2. the per-rank memory the run prints: the gradient accumulator and the
#      optimizer state of each rank are 1/N of one rank's (within one unit of
#      lt_optim_granule per rank), ZeRO-2/3's gradient buffers are smaller
#      than the full gradient, the parameters are whole on every rank below
#      ZeRO-3 and 1/N (plus the gathered groups' buffers) with it;
#   3. a rank SIGKILLed a few ms into a step (its peers inside a collective)
#      ends the job within `timeout 60`, mpirun naming that rank, for every
#      stage, and for ZeRO-1/2/3 in groups of 2 (hybrid chains in flight).
# Skips (77) when mpirun, the MPI communicator or the sample model is absent.
. "$(dirname "$0")/lt_test_lib.sh"
lt_need_mpi
lt_need_model
[ -n "$py" ] || lt_skip "no LT_PYTHON"
lt_enter_tmp

lt_tokenize_sample shards
common=(--model "$model" --data shards/train-00000.h5 --seq-len 64 --micro-batch 1 --max-steps 8
        --lr 2e-3 --warmup-steps 1 --save-every 0 --eval-every 0 --device cpu --threads 1 --log-every 100)
lora=(--lora-rank 4 --lora-alpha 8 --lora-dropout 0.1)

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# ---- 1. ZeRO-2 N ranks == 1 rank, bitwise ----
train 1 one-full --grad-accum 6 || fail "one process: $(tail -2 one-full.txt)"
train 1 one-lora --grad-accum 6 "${lora[@]}" || fail "one process, LoRA: $(tail -2 one-lora.txt)"
train 1 one-lemb --grad-accum 6 "${lora[@]}" --train-embeddings all || fail "one process, LoRA+emb: $(tail -2 one-lemb.txt)"
if ! train 2 probe --grad-accum 3 --max-steps 1; then
  if grep -q "was not built\|built without" probe.txt; then echo "SKIP: no MPI communicator" >&2; exit 77; fi
fi
for spec in "full 2 3 1" "full 3 2 1" "lora 3 2 1" "full 2 3 2" "full 3 2 2 --recompute" "lora 3 2 2" "lemb 2 3 2" "full 2 3 3" "full 3 2 3 --recompute" \
            "lora 2 3 3" "lora 3 2 3 --recompute" "full 1 6 3" "lemb 1 6 3" "lemb 2 3 3" "lemb 3 2 3"; do
  set -- $spec
  mode=$1 np=$2 k=$3 z=$4
  shift 4
  extra=(--grad-accum "$k" --zero "$z" "$@")
  [ "$mode" = lora ] && extra+=("${lora[@]}")
  [ "$mode" = lemb ] && extra+=("${lora[@]}" --train-embeddings all)
  out="np$np-$mode-z$z$(printf %s "$@" | tr -d ' -')"
  if ! train "$np" "$out" "${extra[@]}"; then fail "$out: $(tail -3 "$out.txt")"; continue; fi
  grep -q "ZeRO-$z" "$out.txt" || fail "$out: the run does not say ZeRO-$z"
  if [ "$np" -gt 1 ]; then # the reductions were started non-blocking in the hook
    grep -Eq "ZeRO-$z: [1-9][0-9]* gradient reductions ran non-blocking" "$out.txt" || fail "$out: no non-blocking reductions"
  fi
  if [ "$z" = 3 ] && [ "$np" -gt 1 ]; then # the next layer's gather started (non-blocking) while this one computed
    grep -Eq "ZeRO-3 weight gathers: [1-9][0-9]* prefetched" "$out.txt" || fail "$out: no prefetched gathers: $(grep 'weight gathers' "$out.txt")"
  fi
  if [ "$np" -gt 1 ] && [ "$mode" = full ]; then # final/ from the sharded checkpoint, by rank 0 alone
    grep -q "rank 0 exported $out/final from the sharded checkpoint (nothing gathered)" "$out.txt" \
      || fail "$out: final/ not exported from the sharded checkpoint: $(grep -i export "$out.txt")"
  fi
  if same_run "one-$mode" "$out"; then echo "ok   $out: losses, grad norms and final weights bitwise equal to 1 rank x 6"
  else fail "$out differs from 1 rank x 6"; fi
done
# LT_OVERLAP=0: the reductions complete in the hook and the gathers at use
# (no overlap) -- the same bits as the overlapped runs above
for z in 1 2 3; do
  out="np2-full-z$z-nooverlap"
  if ! LT_OVERLAP=0 train 2 "$out" --grad-accum 3 --zero $z; then fail "$out: $(tail -3 "$out.txt")"; continue; fi
  grep -q "ZeRO-$z: 0 gradient reductions ran non-blocking" "$out.txt" || fail "$out: reductions still non-blocking"
  [ "$z" != 3 ] || grep -q "ZeRO-3 weight gathers: 0 prefetched" "$out.txt" || fail "$out: gathers still prefetched"
  if same_run "np2-full-z$z" "$out" && same_run one-full "$out"; then
    echo "ok   $out: LT_OVERLAP=0 bitwise equal to the overlapped run and to 1 rank x 6"
  else fail "$out differs from the overlapped run"; fi
done
LT_OVERLAP=yes train 2 badoverlap --grad-accum 3 --zero 2 --max-steps 1
grep -q "LT_OVERLAP='yes'" badoverlap.txt || fail "LT_OVERLAP=yes not refused by name: $(tail -2 badoverlap.txt)"
# LT_COMM_STREAM (NCCL on the CUDA backend's stream or its own) is read by
# every run with a communicator: a bad value is refused by name on the CPU too
LT_COMM_STREAM=yes train 1 badstream --zero 2 --max-steps 1
grep -q "LT_COMM_STREAM='yes'" badstream.txt || fail "LT_COMM_STREAM=yes not refused by name: $(tail -2 badstream.txt)"
train 2 bf16 --grad-accum 3 --zero 2 --grad-reduce-dtype bf16 --max-steps 1
grep -q "zero 2 with --grad-reduce-dtype bf16" bf16.txt || fail "--zero 2 with bf16 reduction not refused by name: $(tail -2 bf16.txt)"

# ---- 1e. ZeRO-3 with --train-embeddings new (a row subset of the tables trains) ----
# The table is an ordinary sharded trainable tensor: the rows that do not train have a zero
# gradient (the model masks them) and no weight decay, so AdamW leaves them bit for bit (as
# ZeRO-1/2 do). 1 process, 2 and 3 ranks equal one process without ZeRO (losses, grad norms,
# final/ and step-4/adapter bytes); the sharded checkpoint's table equals one process's, and its
# frozen rows are the base model's.
if lt_use_lb_vocab; then
  common+=(--epochs 0 --save-every 4 "${lora[@]}" --train-embeddings new) # 5 documents: several epochs
  train 1 one-new --grad-accum 6 || fail "one process, --train-embeddings new: $(tail -2 one-new.txt)"
  for np in 1 2 3; do
    out="np$np-new-z3"
    if ! train "$np" "$out" --grad-accum $((6 / np)) --zero 3; then fail "$out: $(grep -v '^step' "$out.txt" | tail -3)"; continue; fi
    if same_run one-new "$out" && cmp -s {one-new,$out}/checkpoints/step-000004/adapter/adapter_model.safetensors; then
      echo "ok   $out: --train-embeddings new under ZeRO-3: losses, grad norms, final/ and step-4 adapters bitwise equal to 1 process"
    else fail "$out differs from one process (--train-embeddings new)"; fi
  done
  "$py" - lb one-new/checkpoints/step-000004 np3-new-z3/checkpoints/step-000004 <<'PY' \
    && echo "ok   np3-new-z3: the sharded checkpoint's table equals one process's; the rows that do not train are the base model's" \
    || fail "np3-new-z3: the embedding table differs from one process's or the base model's"
import json, os, struct, sys
import numpy as np
def header(p):
    f = open(p, "rb"); n = struct.unpack("<Q", f.read(8))[0]; return json.loads(f.read(n)), 8 + n
def tensor(p, name):  # one F32 or BF16 tensor of a safetensors file, as f32
    h, base = header(p); t = h[name]; a, b = t["data_offsets"]
    if t["dtype"] == "BF16":
        x = np.fromfile(p, np.uint16, (b - a) // 2, offset=base + a).astype(np.uint32) << 16
        return x.view(np.float32).reshape(t["shape"])
    assert t["dtype"] == "F32", t["dtype"]
    return np.fromfile(p, np.float32, (b - a) // 4, offset=base + a).reshape(t["shape"])
E = "model.embed_tokens.weight"
base = tensor(os.path.join(sys.argv[1], "model.safetensors"), E)
one = tensor(os.path.join(sys.argv[2], "weights.safetensors"), E)
ix = json.load(open(os.path.join(sys.argv[3], "index.json")))
ent = [w for w in ix["weights"] if w["name"] == E][0]
flat = np.zeros(int(np.prod(ent["shape"])), np.float32)
for f, a, b in ent["slices"]:  # each rank's slice [a, b) of the flat tensor
    h, off = header(os.path.join(sys.argv[3], f)); t = h[E]; s0, s1 = t["data_offsets"]
    flat[a:b] = np.fromfile(os.path.join(sys.argv[3], f), np.float32, (s1 - s0) // 4, offset=off + s0)
    assert b - a == (s1 - s0) // 4
assert (flat.reshape(one.shape).view(np.uint32) == one.view(np.uint32)).all(), "sharded table != one process's"
rows = np.any(one.view(np.uint32) != base.view(np.uint32), axis=1)
added = json.load(open(os.path.join(sys.argv[1], "luxtrain_vocab.json")))["added_ids"]
assert rows.any() and set(np.nonzero(rows)[0]) <= set(added), (np.nonzero(rows)[0][:8], added[:8])
PY
  common=("${saved[@]}")
else
  fail "vocab add / tokenize for --train-embeddings new: $(tail -2 add.txt tok-lb.txt)"
fi

# ---- 1b. hybrid sharding (--shard-group N): groups of N consecutive ranks ----
train 1 one-g12 --grad-accum 12 || fail "one process x 12: $(tail -2 one-g12.txt)"
for spec in "4 2 1 3" "4 2 2 3" "6 3 1 2" "4 2 3 3" "6 2 2 2" "4 2 1 3 0" "4 2 2 3 0" "4 2 3 3 0"; do
  set -- $spec
  np=$1 n=$2 z=$3 k=$4 ov=${5:-1}
  out="np$np-group$n-z$z"
  [ "$ov" = 1 ] || out="$out-nooverlap"
  if ! LT_OVERLAP=$ov train "$np" "$out" --grad-accum "$k" --zero "$z" --shard-group "$n"; then fail "$out: $(tail -3 "$out.txt")"; continue; fi
  grep -q "hybrid sharding in groups of $n ranks" "$out.txt" || fail "$out: the run does not say hybrid sharding"
  if [ "$ov" = 1 ]; then # the chains across the groups started in the hook (non-blocking)
    grep -Eq "ZeRO-$z: [1-9][0-9]* gradient reductions ran non-blocking" "$out.txt" || fail "$out: no non-blocking reductions"
  else
    grep -q "ZeRO-$z: 0 gradient reductions ran non-blocking" "$out.txt" || fail "$out: reductions still non-blocking"
  fi
  if same_run one-g12 "$out"; then echo "ok   $out: hybrid sharding bitwise equal to 1 rank x 12"
  else fail "$out differs from 1 rank x 12"; fi
done
train 3 badgroup --grad-accum 4 --zero 2 --shard-group 2 --max-steps 1
grep -q "shard-group 2 does not divide the world size 3" badgroup.txt || fail "--shard-group 2 on 3 ranks not refused by name: $(tail -2 badgroup.txt)"

# ---- 1c. ZeRO-3 checkpoint and resume on another world size (3 ranks -> 2) ----
LT_TRAIN_TEST_KILL_AFTER=5 train 3 resume3 --grad-accum 2 --zero 3 --save-every 4
[ -f resume3/checkpoints/step-000004/COMPLETE ] || fail "ZeRO-3 resume: no step-4 checkpoint: $(tail -3 resume3.txt)"
train 2 resume3 --grad-accum 3 --zero 3 --save-every 4 --resume || fail "ZeRO-3 resume on 2 ranks: $(tail -3 resume3.txt)"
cmp -s one-full/final/model.safetensors resume3/final/model.safetensors \
  && echo "ok   ZeRO-3: a 3-rank checkpoint resumed on 2 ranks ends with the 1-rank run's final weights" \
  || fail "ZeRO-3 resume 3 -> 2 ranks: final weights differ"

# ---- 1d. rank 0's export failing (final/ cannot be written) fails every rank, saying why ----
mkdir -p badfinal && touch badfinal/final
if train 2 badfinal --grad-accum 3 --zero 3 --max-steps 2; then fail "export to a file named final/: the run succeeded"
else
  grep -q "rank 0 of 2: export to badfinal/final: .*not a folder" badfinal.txt \
    && echo "ok   rank 0's export failing ends the run, saying why" \
    || fail "export failure on rank 0: $(grep -v '^step' badfinal.txt | tail -4)"
  # rank 1 learns it from rank 0's last progress report (unless mpirun, ending the job on rank 0's abort, stops it first)
  grep -q "rank 1 of 2: .*rank 0 of 2 failed exporting badfinal/final" badfinal.txt && echo "ok   rank 1 named rank 0's failure"
fi

# ---- 1f. QLoRA under ZeRO-3 (--quantize nf4 --zero 3): the NF4 weights in parts of whole blocks ----
# each rank quantizes its blocks from its file range (every block's absmax gathered, so the double
# quantization's offset and nested absmax2 are one process's) and gathers the bytes per group; the
# sample model's gate/up/down weights have 704 blocks (3 nested blocks of 256): 3 ranks cut them
# inside nested blocks. 1, 2 and 3 ranks (and 2 without overlap) equal one process without ZeRO
# bitwise; the parameters each rank keeps (the NF4 parts, the norms' and the embedding's parts and
# the whole LoRA matrices) are 1/N of 1 rank's but for the LoRA matrices, and 1 rank's are those of
# one process without ZeRO (its NF4 buffers whole).
qlora=("${lora[@]}" --quantize nf4)
train 1 one-qlora --grad-accum 6 "${qlora[@]}" || fail "one process, QLoRA: $(tail -2 one-qlora.txt)"
for spec in "1 6" "2 3" "3 2" "2 3 nooverlap"; do
  set -- $spec
  np=$1 k=$2 mode=${3:-}
  out="np$np-qlora-z3${mode:+-$mode}"
  if ! LT_OVERLAP=$([ -n "$mode" ] && echo 0 || echo 1) train "$np" "$out" --grad-accum "$k" --zero 3 "${qlora[@]}"; then
    fail "$out: $(grep -v '^step' "$out.txt" | tail -3)"; continue
  fi
  grep -q "QLoRA (NF4 base weights).*ZeRO-3" "$out.txt" || fail "$out: the run does not say QLoRA with ZeRO-3"
  if [ "$np" -gt 1 ] && [ -z "$mode" ]; then
    grep -Eq "ZeRO-3 weight gathers: [1-9][0-9]* prefetched" "$out.txt" || fail "$out: no prefetched gathers"
  fi
  if same_run one-qlora "$out"; then echo "ok   $out: QLoRA under ZeRO-3, losses, grad norms and final adapter bitwise equal to 1 rank x 6"
  else fail "$out differs from one QLoRA process x 6"; fi
done
# a QLoRA ZeRO-3 checkpoint (adapter and optimizer parts; the NF4 base is quantized again from the
# files) resumed on another world size (3 ranks -> 2) ends with the uninterrupted run's adapter
LT_TRAIN_TEST_KILL_AFTER=5 train 3 resumeq --grad-accum 2 --zero 3 --save-every 4 "${qlora[@]}"
[ -f resumeq/checkpoints/step-000004/COMPLETE ] || fail "QLoRA ZeRO-3 resume: no step-4 checkpoint: $(tail -3 resumeq.txt)"
train 2 resumeq --grad-accum 3 --zero 3 --save-every 4 --resume "${qlora[@]}" || fail "QLoRA ZeRO-3 resume on 2 ranks: $(tail -3 resumeq.txt)"
cmp -s one-qlora/final/adapter_model.safetensors resumeq/final/adapter_model.safetensors \
  && echo "ok   QLoRA ZeRO-3: a 3-rank checkpoint resumed on 2 ranks ends with one process's final adapter" \
  || fail "QLoRA ZeRO-3 resume 3 -> 2 ranks: final adapter differs"
"$py" - <<'PY' || fail "QLoRA under ZeRO-3: per-rank parameter memory does not fall as 1/N"
import re
def mem(np):
    out = {}
    for l in open("np%d-qlora-z3.txt" % np):
        m = re.match(r"train: memory rank (\d+) of \d+: parameters (\d+) B, .*gradient accumulator (\d+) B", l)
        if m: out[int(m.group(1))] = int(m.group(2))
        m = re.match(r"train: memory rank 0 of 1: .*gradient accumulator (\d+) B", l)
        if m: out["lora"] = int(m.group(1))  # 1 rank: the LoRA matrices' f32 bytes
    return out
one = mem(1)
lora, P = one["lora"], one[0] - one["lora"]  # LoRA A/B (whole on every rank); the sharded rest
whole = [int(m.group(1)) for m in (re.match(r"train: memory rank 0 of 1: parameters (\d+) B", l)
                                   for l in open("one-qlora.txt")) if m]  # without ZeRO: the NF4 buffers whole
assert whole == [one[0]], ("QLoRA parameters without ZeRO %s B, ZeRO-3 on 1 rank %d B" % (whole, one[0]))
assert P > 5 * lora, (P, lora)
for np in (2, 3):
    got = mem(np)
    assert sorted(got) == list(range(np)), got
    for r, p in got.items():  # 1/N within a block's bytes (64 B) per tensor
        assert abs((p - lora) - P / np) <= 64 * 40, ("rank %d of %d keeps %d B of sharded weights, 1/N = %d" % (r, np, p - lora, P / np))
    print("ok   QLoRA ZeRO-3 on %d ranks: parameters %s B per rank (1 rank: %d B, of them %d B LoRA kept whole)"
          % (np, sorted(got.values()), one[0], lora))
PY

# ---- 2. per-rank memory, printed by the run, falls as 1/N ----
for np in 1 2 3; do
  for z in 0 1 2 3; do train "$np" "mem$np-z$z" --grad-accum $((6 / np)) --zero $z --max-steps 1 || fail "mem $np z$z"; done
done
"$py" - <<'PY' || fail "per-rank memory does not fall as 1/N"
import re
def mem(np, z):
    out = {}
    for l in open("mem%d-z%d.txt" % (np, z)):
        m = re.match(r"train: memory rank (\d+) of (\d+): parameters (\d+) B, gathered weights (\d+) B, "
                     r"gradient buffers (\d+) B, gradient accumulator (\d+) B, optimizer state (\d+) B", l)
        if m: out[int(m.group(1))] = [int(x) for x in m.groups()[2:]]
    assert sorted(out) == list(range(np)), (np, z, sorted(out))
    return out
one = mem(1, 0)[0]
P, _, G, A, O = one
unit = 256 * 4  # lt_optim_granule: 256 floats for the sample model
for np in (1, 2, 3):
    for z in (0, 1, 2, 3):
        for r, (p, pg, g, a, o) in mem(np, z).items():
            if z == 3:  # this rank's parts: 1/N of the model (per tensor, within a unit each), plus the gathered groups
                assert abs(p - P / np) <= 16 * unit and 0 < pg < P, ("ZeRO-3 parameters", np, r, p, pg, P)
            else:
                assert p == P and pg == 0, ("parameters are whole on every rank below ZeRO-3", np, z, r, p, P)
            if z == 0:
                assert (g, a, o) == (G, A, O), (np, z, r)
                continue
            assert abs(a - A / np) <= unit and abs(o - O / np) <= 2 * unit, ("1/N", np, z, r, a, o, A, O)
            assert (g == G) if z == 1 else (0 < g < G), ("gradient buffers", np, z, r, g, G)
        if z:
            print("ok   %d rank(s), ZeRO-%d: parameters %s B, accumulator %s B, optimizer state %s B per rank "
                  "(1 rank: %d, %d, %d); gradient buffers %d B (full: %d)" % (np, z, [v[0] for v in mem(np, z).values()],
                  [v[3] for v in mem(np, z).values()], [v[4] for v in mem(np, z).values()], P, A, O, mem(np, z)[0][2], G))
PY

# ---- 3. a rank SIGKILLed mid-step ends the job, named, at every stage ----
# (z1g2, z2g2, z3g2: 4 ranks in groups of 2, the reductions chained across the groups)
for z in 0 1 2 3 1g2 2g2 3g2; do
  t0=$(now_ms)
  np=3 extra=()
  case $z in *g2) np=4 extra=(--shard-group 2) ;; esac
  LT_FAULT_RANK=1 LT_FAULT_STEP=3 LT_FAULT_MODE=kill LT_COMM_TIMEOUT_S=30 train $np "kill-z$z" --grad-accum 2 --zero "${z%g2}" "${extra[@]}"
  rc=$?
  dt=$(( $(now_ms) - t0 ))
  if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then fail "kill z$z: exit $rc after ${dt} ms (must fail, not hang)"; continue; fi
  grep -q "rank 1 of $np: fault injection: SIGKILL" "kill-z$z.txt" || fail "kill z$z: no fault message: $(tail -4 "kill-z$z.txt")"
  grep -Eq "process rank 1 with PID .* signal 9" "kill-z$z.txt" || fail "kill z$z: mpirun did not name rank 1: $(tail -6 "kill-z$z.txt")"
  [ "$dt" -lt 20000 ] || fail "kill z$z: the job took ${dt} ms to end"
  echo "ok   ZeRO-$z: rank 1 SIGKILLed mid-step; the job ended with exit $rc after ${dt} ms, naming rank 1"
done

lt_finish
