#!/usr/bin/env bash
# test_ckpt_sharded.sh -- sharded checkpoints (lt_ckpt.h) of `luxtrain train`
# under mpirun (CPU ranks, the MPI communicator) on the sample model, against
# one process with the same global batch (--micro-batch 1: 1 x --grad-accum 6
# = 2 ranks x 3 = 3 ranks x 2), 6 steps, checkpoints every 2:
#   1. layout: a 3-rank checkpoint holds index.json and weights- /
#      optimizer-rank-R-of-3.safetensors, no gathered file; no rank's file
#      holds the whole model; COMPLETE lists every file;
#   2. resume on another number of ranks, bitwise: 3 -> 2 (full and LoRA,
#      ZeRO-1), 2 -> 3 (ZeRO-1), 2 (no ZeRO: flat ranges) -> 1 process, and an
#      old-format (gathered, 1-process) checkpoint -> 2 ranks, LoRA with
#      --train-embeddings new (state for the added rows only) 2 -> 1 and, under
#      ZeRO-2 (each rank the rows inside its part: the ranks' optimizer state
#      adds up to one process's), 3 -> 2: every step's
#      loss and grad norm strings and the final weights' bytes equal the
#      uninterrupted 1-process run;
#   3. offline export (`luxtrain export`, one process) of a mid-run sharded
#      checkpoint equals byte for byte what the run wrote at that step
#      (step-N/hf, step-N/adapter), of the last one the run's final/; its
#      peak resident memory grows by less than the model's f32 size (streamed);
#      a mid-run checkpoint still exports after the run resumed at another
#      number of ranks (config.json then holds the new --grad-accum); --gguf
#      of a sharded checkpoint is refused with what to do instead;
#   4. crashes while writing: a non-zero rank killed after writing its shard
#      (LT_CKPT_TEST_KILL_AT=3 LT_CKPT_TEST_KILL_RANK=1) and rank 0 killed
#      after COMPLETE but before the rename (6): no step-N appears, the
#      previous checkpoint stays the newest and resumes to the same result;
#   5. a missing rank file is refused by name;
#   6. `luxtrain inspect` of a 3-rank (ZeRO-1, full and LoRA) and a 2-rank
#      (no ZeRO) checkpoint: form, world, ZeRO stage, mode, each rank file's
#      size (= on disk = COMPLETE) and tensor / element counts (= index.json),
#      text and --json; then a deleted and a truncated rank file (with and
#      without COMPLETE) are named, exit status 1;
#   7. rank 0 hung in its export of step-N/hf (LT_FAULT_EXPORT, mode hang,
#      LT_COMM_TIMEOUT_S=3): rank 1 ends the job within seconds naming rank 0
#      and the folder it was exporting; a slow export (mode slow) that takes
#      longer than the timeout in all but reports progress is not cut off,
#      nor is one slow only in its tail (after the last tensor: the sync, the
#      copied files, the rename); the same for a LoRA run's adapter export
#      (slow: goes on; hung: rank 0 and step-N/adapter named).
# Skips (77) when mpirun, the MPI communicator or the sample model is absent.
. "$(dirname "$0")/lt_test_lib.sh"
lt_need_mpi
lt_need_model
ok() { echo "ok   $*"; }
lt_enter_tmp

lt_tokenize_sample shards
common=(--model "$model" --data shards/train-00000.h5 --seq-len 64 --micro-batch 1 --epochs 0 --max-steps 6
        --lr 2e-3 --warmup-steps 1 --save-every 2 --eval-every 0 --device cpu --threads 1 --log-every 100)
lora=(--lora-rank 4 --lora-alpha 8 --lora-dropout 0.1)

# train NP OUT ARGS...: 1 = plain process, else mpirun -np NP (per-rank --grad-accum 6 / NP)
train() {
  local np=$1 out=$2
  shift 2
  if [ "$np" = 1 ]; then
    "$bin" train "${common[@]}" --grad-accum 6 "$@" --out "$out" >>"$out.txt" 2>&1
  else
    timeout 120 mpirun --oversubscribe -np "$np" "$bin" train "${common[@]}" --grad-accum $((6 / np)) "$@" \
      --out "$out" >>"$out.txt" 2>&1
  fi
}
steps() { sed -n 's/.*"step": \([0-9]*\),.*"loss": \([^,]*\),.*"grad_norm": \([^,]*\),.*/\1 \2 \3/p' "$1/metrics.jsonl"; }
# same_run REF RUN WHAT: every step's loss and grad norm, and the final weights, bitwise equal
same_run() {
  local a b
  a=$(steps "$1") b=$(steps "$2")
  [ "$(echo "$a" | wc -l)" = 6 ] || { fail "$3: $1 has $(echo "$a" | wc -l) steps"; return; }
  if [ "$a" != "$b" ]; then fail "$3: losses / grad norms differ: $(diff <(echo "$a") <(echo "$b") | head -4 | tr '\n' ' ')"
  elif ! cmp -s "$(final_of "$1")" "$(final_of "$2")"; then fail "$3: final weights differ"
  else ok "$3: 6 steps' losses, grad norms and the final weights bitwise equal to 1 process"; fi
}
same_dir() { # A B: the same file names, every file equal byte for byte
  local a="$1" b="$2" f
  [ -d "$a" ] && [ -d "$b" ] || return 1
  [ "$(ls "$a")" == "$(ls "$b")" ] || { echo "  files differ: $(ls "$a" | tr '\n' ' ') vs $(ls "$b" | tr '\n' ' ')"; return 1; }
  for f in "$a"/*; do cmp -s "$f" "$b/$(basename "$f")" || { echo "  $(basename "$f") differs"; return 1; }; done
}
export_eq() { # NAME CHECKPOINT REFERENCE
  rm -rf "out-$1"
  if ! "$bin" export "$2" --out "out-$1" >"export-$1.txt" 2>&1; then fail "export $1: $(tail -2 "export-$1.txt")"; return; fi
  if same_dir "$3" "out-$1"; then ok "export $1: the offline export of $2 equals $3"; else fail "export $1: differs from $3"; fi
}
ck() { printf '%s/checkpoints/step-%06d' "$1" "$2"; }

train 2 probe --max-steps 1 --save-every 0
if grep -q "was not built\|built without" probe.txt; then lt_skip "no MPI communicator"; fi
grep -q "communicator mpi" probe.txt || fail "2 ranks did not use the MPI communicator: $(tail -3 probe.txt)"

# ---- references: one process ----
train 1 ref-full --save-every 0 || fail "1 process: $(tail -2 ref-full.txt)"
train 1 ref-lora --save-every 0 "${lora[@]}" || fail "1 process LoRA: $(tail -2 ref-lora.txt)"

# ---- 1-3. 3 ranks -> 2 ranks, full and LoRA ----
for mode in full lora; do
  extra=(--zero 1)
  [ $mode = lora ] && extra+=("${lora[@]}")
  LT_TRAIN_TEST_KILL_AFTER=3 train 3 "s3-$mode" "${extra[@]}"
  c=$(ck "s3-$mode" 2)
  [ -f "$c/COMPLETE" ] && [ ! -e "$(ck "s3-$mode" 4)" ] || { fail "3 ranks $mode: no step-2 checkpoint: $(tail -3 "s3-$mode.txt")"; continue; }
  files=$(cd "$c" && ls -- *.safetensors index.json 2>/dev/null | tr '\n' ' ')
  want="index.json optimizer-rank-00000-of-00003.safetensors optimizer-rank-00001-of-00003.safetensors optimizer-rank-00002-of-00003.safetensors weights-rank-00000-of-00003.safetensors weights-rank-00001-of-00003.safetensors weights-rank-00002-of-00003.safetensors "
  [ "$(echo "$files" | tr ' ' '\n' | sort | tr '\n' ' ')" = "$(echo "$want" | tr ' ' '\n' | sort | tr '\n' ' ')" ] \
    && ok "3 ranks $mode: step 2 is sharded: $files" || fail "3 ranks $mode: files $files"
  for f in "$c"/*-rank-*; do grep -q "\"$(basename "$f")\"" "$c/COMPLETE" || fail "COMPLETE does not list $f"; done
  sizes=$(stat -c %s "$c"/weights-rank-*)
  total=$(echo "$sizes" | paste -sd+ | bc) max=$(echo "$sizes" | sort -n | tail -1)
  [ $((max * 2)) -lt "$total" ] && ok "3 ranks $mode: the largest rank's weights file is $max of $total bytes" \
    || fail "3 ranks $mode: a rank wrote $max of $total bytes of weights"
  sub=hf; [ $mode = lora ] && sub=adapter
  export_eq "s3-$mode-mid" "$c" "$c/$sub"
  train 2 "s3-$mode" "${extra[@]}" --resume || fail "resume $mode on 2 ranks: $(tail -3 "s3-$mode.txt")"
  grep -q "resuming from .*step-000002 (step 2, written by another number of ranks.*sharded" "s3-$mode.txt" \
    || fail "$mode: no resume message: $(grep resuming "s3-$mode.txt")"
  same_run "ref-$mode" "s3-$mode" "$mode 3 ranks -> 2 ranks"
  export_eq "s3-$mode-final" "$(ck "s3-$mode" 6)" "s3-$mode/final"
  # config.json now holds the 2-rank launch's --grad-accum: step 2 (3 ranks) is still this run's
  export_eq "s3-$mode-mid-after" "$c" "$c/$sub"
done
"$bin" export "$(ck s3-full 2)" --gguf s3.gguf >gguf.txt 2>&1
[ $? -eq 1 ] && grep -q "is sharded (written by 3 ranks): export the Hugging Face folder" gguf.txt \
  && ok "--gguf of a sharded checkpoint: refused with the way round" || fail "--gguf of a sharded checkpoint: $(cat gguf.txt)"

# peak memory of the offline export: streamed, not the whole model
line=$(grep "peak resident memory" export-s3-full-mid.txt)
echo "     $line"
grow=$(echo "$line" | sed -n 's/.*, +\([0-9]*\) KiB).*/\1/p')
wkib=$(echo "$line" | sed -n "s/.*weights: \([0-9]*\) KiB in f32.*/\1/p")
big=$(echo "$line" | sed -n 's/.*largest tensor \([0-9]*\) KiB.*/\1/p')
if [ -n "$grow" ] && [ -n "$wkib" ] && [ -n "$big" ] && [ "$grow" -lt "$wkib" ] && [ "$grow" -le $((3 * big + 512)) ]; then
  ok "export: peak memory grew by $grow KiB for $wkib KiB of f32 weights (largest tensor $big KiB)"
else fail "export memory: '$line'"; fi

# ---- 2 -> 3 ranks (ZeRO-1), 2 ranks without ZeRO -> 1 process, old format -> 2 ranks ----
LT_TRAIN_TEST_KILL_AFTER=3 train 2 s2 --zero 1
train 3 s2 --zero 1 --resume || fail "2 -> 3: $(tail -3 s2.txt)"
same_run ref-full s2 "full 2 ranks -> 3 ranks"
LT_TRAIN_TEST_KILL_AFTER=3 train 2 z0 --zero 0
[ -f "$(ck z0 2)/weights-rank-00001-of-00002.safetensors" ] || fail "no ZeRO: no sharded checkpoint"
train 1 z0 --resume || fail "2 ranks (no ZeRO) -> 1: $(tail -3 z0.txt)"
same_run ref-full z0 "full 2 ranks (no ZeRO) -> 1 process"
LT_TRAIN_TEST_KILL_AFTER=3 train 1 old
[ -f "$(ck old 2)/weights.safetensors" ] || fail "1 process: no gathered checkpoint"
train 2 old --zero 1 --resume || fail "old format -> 2 ranks: $(tail -3 old.txt)"
same_run ref-full old "full 1 process (gathered checkpoint) -> 2 ranks"

# a row subset's state (LoRA + --train-embeddings new: AdamW state and master
# weights for the added rows only) through a 2-rank sharded checkpoint -> 1 process
if lt_use_lb_vocab; then
  train 1 ref-emb --save-every 0 "${lora[@]}" --train-embeddings new || fail "1 process rows: $(tail -2 ref-emb.txt)"
  LT_TRAIN_TEST_KILL_AFTER=3 train 2 e2 --zero 0 "${lora[@]}" --train-embeddings new
  [ -f "$(ck e2 2)/optimizer-rank-00001-of-00002.safetensors" ] || fail "rows: no sharded checkpoint: $(tail -3 e2.txt)"
  train 1 e2 --resume "${lora[@]}" --train-embeddings new || fail "rows 2 -> 1: $(tail -3 e2.txt)"
  same_run ref-emb e2 "LoRA + --train-embeddings new 2 ranks -> 1 process"
  # ZeRO-2: each rank keeps the rows' state inside its part only, so the ranks' optimizer state adds up
  # to one process's (the memory lines; the whole tables' would be ~the tables' size more); a 3-rank
  # checkpoint resumes on 2 ranks to the uninterrupted run
  LT_TRAIN_TEST_KILL_AFTER=3 train 3 e3 --zero 2 "${lora[@]}" --train-embeddings new
  [ -f "$(ck e3 2)/optimizer-rank-00002-of-00003.safetensors" ] || fail "rows ZeRO-2: no 3-rank checkpoint: $(tail -3 e3.txt)"
  state_sum() { sed -n "s/^train: memory rank [0-9]* of $2: .*optimizer state \([0-9]*\) B.*/\1/p" "$1" | paste -sd+ | bc; }
  s1=$(state_sum ref-emb.txt 1) s3=$(state_sum e3.txt 3)
  [ -n "$s1" ] && [ "$s1" -gt 0 ] && [ "$s1" = "$s3" ] \
    && ok "rows ZeRO-2: the 3 ranks' optimizer state adds up to one process's ($s3 B = $s1 B)" \
    || fail "rows ZeRO-2: the 3 ranks' optimizer state ${s3:-?} B, one process's ${s1:-?} B"
  train 2 e3 --zero 2 --resume "${lora[@]}" --train-embeddings new || fail "rows ZeRO-2 3 -> 2: $(tail -3 e3.txt)"
  same_run ref-emb e3 "LoRA + --train-embeddings new, ZeRO-2, 3 ranks -> 2 ranks"
  common=("${saved[@]}")
else
  fail "vocab add / tokenize for the row-subset case: $(tail -2 add.txt tok-lb.txt)"
fi

# ---- 4. crashes while writing ----
# rank 1 dies after writing its files of the step-2 checkpoint: no step-2
LT_CKPT_TEST_KILL_AT=3 LT_CKPT_TEST_KILL_RANK=1 train 3 crash1 --zero 1
[ $? -ne 0 ] || fail "crash on rank 1: the job succeeded"
if [ -e "$(ck crash1 2)" ] || ! compgen -G "crash1/checkpoints/.tmp-step-000002-*" >/dev/null; then
  fail "crash on rank 1: $(ls -a crash1/checkpoints)"
else
  ok "rank 1 killed after writing its shard: no step-2 checkpoint, only $(cd crash1/checkpoints && echo .tmp-*)"
fi
# from a complete step-2 checkpoint: rank 1 (then rank 0 after COMPLETE, before the rename) dies
# writing step 4; step 2 stays the newest and resumes to the uninterrupted result
for spec in "3 1" "6 0"; do
  set -- $spec
  rm -rf crash crash.txt
  LT_TRAIN_TEST_KILL_AFTER=3 train 3 crash --zero 1
  LT_CKPT_TEST_KILL_AT=$1 LT_CKPT_TEST_KILL_RANK=$2 train 2 crash --zero 1 --resume
  [ $? -ne 0 ] || fail "crash at stage $1 on rank $2: the job succeeded"
  if [ -e "$(ck crash 4)" ] || [ ! -f "$(ck crash 2)/COMPLETE" ]; then fail "crash at stage $1 on rank $2: $(ls -a crash/checkpoints)"
  else
    train 2 crash --zero 1 --resume || fail "resume after the crash: $(tail -3 crash.txt)"
    grep -q "resuming from .*step-000002" crash.txt || fail "after the crash: not resumed from step 2"
    same_run ref-full crash "crash at stage $1 on rank $2 writing step 4, resumed from step 2"
  fi
done

# ---- 5. a missing rank file ----
cp -r s3-full broken && rm "$(ck broken 2)/optimizer-rank-00001-of-00003.safetensors"
"$bin" export "$(ck broken 2)" --out err-broken >broken.txt 2>&1
[ $? -eq 1 ] && grep -q "optimizer-rank-00001-of-00003.safetensors: missing (listed in COMPLETE" broken.txt && [ ! -e err-broken ] \
  && ok "a missing rank file is refused by name" || fail "missing rank file: $(cat broken.txt)"

# ---- 6. inspect: what each rank file holds, and what is missing ----
# inspect_ok NAME CHECKPOINT WORLD ZERO MODE: text and --json against the files, index.json and COMPLETE
inspect_ok() {
  local name=$1 c=$2
  if ! "$bin" inspect "$c" >"insp-$name.txt" 2>&1 || ! "$bin" inspect "$c" --json >"insp-$name.json" 2>"insp-$name.err"; then
    fail "inspect $name: $(tail -3 "insp-$name.txt" "insp-$name.err")"; return
  fi
  "${py:-python3}" - "$c" "$3" "$4" "$5" "insp-$name.json" "insp-$name.txt" <<'PY' && ok "inspect $name: $3 ranks, ZeRO-$4, $5: every rank file's size and slices" || fail "inspect $name: $(head -c 600 "insp-$name.txt")"
import json, os, re, sys
c, w, z, mode, jf, tf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
j, text = json.load(open(jf)), open(tf).read()
idx = json.load(open(os.path.join(c, "index.json")))
man = json.load(open(os.path.join(c, "COMPLETE")))["files"]
assert (j["form"], j["world"], j["zero"], j["mode"]) == ("sharded", w, z, mode), j
assert j["complete"] and j["usable"] and j["problems"] == [], j["problems"]
files = {f["name"]: f for f in j["files"]}
for kind in ("weights", "optimizer"):
    per = {}
    for e in idx[kind]:
        for fn, a, b in e["slices"]:
            p = per.setdefault(fn, [0, 0]); p[0] += 1; p[1] += b - a
    assert j[kind]["tensors"] == len(idx[kind]), (kind, j[kind])
    total = 0
    for r in range(w):
        fn = "%s-rank-%05d-of-%05d.safetensors" % (kind, r, w)
        f, size = files[fn], os.path.getsize(os.path.join(c, fn))
        assert f["rank"] == r and f["holds"] == kind and f["bytes"] == size == man[fn] == f["listed_bytes"], f
        assert [f["tensors"], f["elements"]] == per.get(fn, [0, 0]), (fn, f, per.get(fn))
        total += f["elements"]
        assert re.search(r"^  %d +%s +%d +%d +\d+ +%d  %s: " % (r, re.escape(fn), size, f["tensors"], f["elements"], kind),
                         text, re.M), "no text line for " + fn
    assert total == j[kind]["elements"], (kind, total, j[kind])  # disjoint slices (no replicas here)
zs = "with ZeRO-%d" % z if z else "without ZeRO"
assert re.search(r"^form: +sharded, written by %d ranks %s" % (w, zs), text, re.M), text[:300]
assert re.search(r"^step: .*, %s fine-tuning" % ("LoRA" if mode == "lora" else "full"), text, re.M)
assert "\ncheck:          complete" in text
PY
}
inspect_ok 3-full "$(ck s3-full 2)" 3 1 full
inspect_ok 3-lora "$(ck s3-lora 2)" 3 1 lora
inspect_ok 2-noz "$(ck z0 2)" 2 0 full
# damaged copies: the bad file named in the text and in --json's problems, exit status 1
# insp_bad NAME CHECKPOINT PATTERN...: inspect fails and prints every pattern (grep's basic regular
# expressions: parentheses are literal), and --json lists it among "problems"
insp_bad() {
  local name=$1 c=$2 pat rc
  shift 2
  "$bin" inspect "$c" >"bad-$name.txt" 2>&1; rc=$?
  "$bin" inspect "$c" --json >"bad-$name.json" 2>/dev/null
  [ $rc -eq 1 ] || { fail "inspect $name: exit $rc: $(cat "bad-$name.txt")"; return; }
  for pat in "$@"; do
    grep -q -- "$pat" "bad-$name.txt" || { fail "inspect $name: no '$pat': $(sed -n '/^check:/,/^holds:/p' "bad-$name.txt")"; return; }
    "${py:-python3}" -c 'import json, re, sys; j = json.load(open(sys.argv[1])); sys.exit(not (not j["usable"] and any(re.search(sys.argv[2].replace("(", r"\(").replace(")", r"\)"), p) for p in j["problems"])))' \
      "bad-$name.json" "$pat" || { fail "inspect $name --json: no problem '$pat': $(cat "bad-$name.json")"; return; }
  done
  ok "inspect $name: exit 1, names: $(sed -n '/^check:/,/^holds:/p' "bad-$name.txt" | sed -n '2,$p' | grep -v '^holds:' | cut -c3-90 | paste -sd'|')"
}
rm -rf dmg3 dmg2 && cp -r "$(ck s3-full 2)" dmg3 && cp -r "$(ck z0 2)" dmg2
rm dmg3/weights-rank-00001-of-00003.safetensors
truncate -s 100 dmg3/optimizer-rank-00002-of-00003.safetensors
truncate -s $(( $(stat -c %s dmg2/weights-rank-00000-of-00002.safetensors) - 8 )) dmg2/weights-rank-00000-of-00002.safetensors
insp_bad 3-damaged dmg3 "weights-rank-00001-of-00003.safetensors: missing (COMPLETE lists it with [0-9]* bytes)" \
  "optimizer-rank-00002-of-00003.safetensors: 100 bytes, but COMPLETE lists [0-9]* (truncated"
insp_bad 2-truncated dmg2 "weights-rank-00000-of-00002.safetensors: [0-9]* bytes, but COMPLETE lists [0-9]* (truncated"
grep -q "^  1 *weights-rank-00001-of-00003.safetensors *MISSING" bad-3-damaged.txt || fail "inspect: no MISSING row"
rm dmg3/COMPLETE
insp_bad 3-incomplete dmg3 "no COMPLETE marker" "weights-rank-00001-of-00003.safetensors: missing (rank 1 of 3 writes it)" \
  "optimizer-rank-00002-of-00003.safetensors: .*100-byte file"

# ---- 7. rank 0 hung (or slow) in its export of step-N/hf ----
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(now_ms)
LT_FAULT_RANK=0 LT_FAULT_EXPORT=3 LT_FAULT_MODE=hang LT_COMM_TIMEOUT_S=3 train 2 xhang --zero 1 --max-steps 2
rc=$? dt=$(( $(now_ms) - t0 ))
if [ $rc -eq 0 ] || [ $rc -eq 124 ] || [ $dt -gt 60000 ]; then fail "export hang: exit $rc after $dt ms"
elif grep -q "rank 1 of 2: collective broadcast timed out after 3 s.*waiting for rank 0, which was exporting xhang/checkpoints/step-000002/hf from the sharded checkpoint" xhang.txt; then
  ok "rank 0 hung in its export: rank 1 ended the job after $dt ms naming rank 0 and xhang/checkpoints/step-000002/hf"
else fail "export hang: no message naming rank 0's export: $(grep -v '^step' xhang.txt | tail -5)"; fi
t0=$(now_ms)
LT_FAULT_RANK=0 LT_FAULT_EXPORT=1 LT_FAULT_MODE=slow LT_FAULT_DELAY_MS=150 LT_COMM_TIMEOUT_S=2 train 2 xslow --zero 1 --max-steps 2
rc=$? dt=$(( $(now_ms) - t0 ))
if [ $rc -eq 0 ] && [ -f xslow/final/model.safetensors ] && [ $dt -gt 4000 ]; then
  ok "a slow export (150 ms per tensor, $dt ms in all) outlived LT_COMM_TIMEOUT_S=2 on its progress reports"
else fail "slow export: exit $rc after $dt ms: $(grep -v '^step' xslow.txt | tail -4)"; fi
# the export's tail (the sync of model.safetensors, the copied files, the rename) reports too: slowed
# from the first report after the last tensor's, 6 steps of 700 ms (4.2 s) outlive LT_COMM_TIMEOUT_S=2
ntensors=$("$py" -c "
import json, struct, sys
f = open(sys.argv[1], 'rb'); h = json.loads(f.read(struct.unpack('<Q', f.read(8))[0])); h.pop('__metadata__', None)
print(len(h))" "$model/model.safetensors")
t0=$(now_ms)
LT_FAULT_RANK=0 LT_FAULT_EXPORT=$((ntensors + 1)) LT_FAULT_MODE=slow LT_FAULT_DELAY_MS=700 LT_COMM_TIMEOUT_S=2 \
  train 2 xtail --zero 1 --max-steps 2
rc=$? dt=$(( $(now_ms) - t0 ))
if [ $rc -eq 0 ] && [ -f xtail/final/model.safetensors ] && [ $dt -gt 8000 ]; then
  ok "a slow export tail (700 ms per step after the last of $ntensors tensors, $dt ms in all) outlived LT_COMM_TIMEOUT_S=2 on its reports"
else fail "slow export tail: exit $rc after $dt ms: $(grep -v '^step' xtail.txt | tail -4)"; fi
# LoRA: rank 0's adapter export (step-N/adapter, final/) is watched the same way: slow goes on, hung is named
t0=$(now_ms)
LT_FAULT_RANK=0 LT_FAULT_EXPORT=1 LT_FAULT_MODE=slow LT_FAULT_DELAY_MS=50 LT_COMM_TIMEOUT_S=2 \
  train 2 xaslow --zero 1 --max-steps 2 "${lora[@]}"
rc=$? dt=$(( $(now_ms) - t0 ))
if [ $rc -eq 0 ] && [ -f xaslow/final/adapter_model.safetensors ] && [ $dt -gt 4000 ] \
   && grep -q "rank 0 exported xaslow/final (the adapter)" xaslow.txt; then
  ok "a slow adapter export (50 ms per step, $dt ms in all) outlived LT_COMM_TIMEOUT_S=2 on its progress reports"
else fail "slow adapter export: exit $rc after $dt ms: $(grep -v '^step' xaslow.txt | tail -4)"; fi
t0=$(now_ms)
LT_FAULT_RANK=0 LT_FAULT_EXPORT=3 LT_FAULT_MODE=hang LT_COMM_TIMEOUT_S=3 train 2 xahang --zero 1 --max-steps 2 "${lora[@]}"
rc=$? dt=$(( $(now_ms) - t0 ))
if [ $rc -eq 0 ] || [ $rc -eq 124 ] || [ $dt -gt 60000 ]; then fail "adapter export hang: exit $rc after $dt ms"
elif grep -q "rank 1 of 2: collective broadcast timed out after 3 s.*waiting for rank 0, which was exporting xahang/checkpoints/step-000002/adapter (the adapter)" xahang.txt; then
  ok "rank 0 hung in its adapter export: rank 1 ended the job after $dt ms naming rank 0 and xahang/checkpoints/step-000002/adapter"
else fail "adapter export hang: no message naming rank 0's export: $(grep -v '^step' xahang.txt | tail -5)"; fi

lt_finish
