#!/usr/bin/env bash
# test_model_cuda_selftest.sh -- checks test_model_cuda itself, without a GPU
# (LT_MODEL_CUDA_SELFTEST, see tests/test_model_cuda.c): its "CUDA" side is a
# second CPU backend with a wrapped op table.
#   cpu   identical ops                        -> must pass (every error 0)
#   bf16  activations rounded to bf16 as CUDA  -> must pass (the tolerances
#         hold for bf16 storage)
#   rope  bf16 + rotary embedding the wrong way -> must fail, on the logits,
#         the decode logits and the gradients of EVERY model
#   gqa   bf16 + query head h reads kv head h % Hkv -> likewise
#   lora  bf16 + LoRA adapter term scaled by 1.25 -> must fail on every
#         model's LoRA logits / decode / A-B gradients, and on no full-model
#         check
#   adamw bf16 + AdamW steps 1.5x too large -> must fail on the training
#         runs (full and LoRA) and on nothing else
# The test binary is found next to luxtrain's build folder
# ($LT_BIN = <build>/tools/luxtrain -> <build>/tests/test_model_cuda).
set -u
bin="${LT_BIN:?LT_BIN not set}"
t="${LT_MODEL_CUDA_BIN:-$(dirname "$bin")/../tests/test_model_cuda}"
tmp="${LT_TMP:-$(mktemp -d)}"
mkdir -p "$tmp"
models="llama llama_tied mistral qwen2 qwen3 synth_llama_d64 synth_qwen3_d128"
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
[ -x "$t" ] || { echo "FAIL: test_model_cuda not built at $t" >&2; exit 1; }

for mode in cpu bf16 rope gqa lora adamw; do
  # the model-only faults (rope, gqa, lora) need no training run
  no_train=0; case $mode in rope|gqa|lora) no_train=1 ;; esac
  LT_MODEL_CUDA_NO_TRAINING=$no_train LT_MODEL_CUDA_SELFTEST=$mode "$t" >"$tmp/$mode.out" 2>"$tmp/$mode.err"
  rc=$?
  echo "--- LT_MODEL_CUDA_SELFTEST=$mode: exit $rc, $(grep -c '^FAIL' "$tmp/$mode.err") failed checks"
  sed -n '/normalized errors/,$p' "$tmp/$mode.out" | cut -c1-140
  case $mode in
    cpu|bf16)
      [ $rc -eq 0 ] || { fail "$mode: must pass, exit $rc"; head -20 "$tmp/$mode.err" >&2; } ;;
    rope|gqa)
      [ $rc -eq 1 ] || fail "$mode: must fail (exit 1), exit $rc"
      for m in $models; do
        for what in "full logits" "full decode" "lora logits" "lora decode"; do
          grep -q "^FAIL $m $what" "$tmp/$mode.err" || fail "$mode: $m $what not flagged"
        done
        grep -q "^FAIL.*$m full: all gradients as one vector" "$tmp/$mode.err" || fail "$mode: $m gradients not flagged"
      done ;;
    lora)
      [ $rc -eq 1 ] || fail "$mode: must fail (exit 1), exit $rc"
      for m in $models; do
        for what in "lora logits" "lora decode"; do
          grep -q "^FAIL $m $what" "$tmp/$mode.err" || fail "$mode: $m $what not flagged"
        done
        grep -q "^FAIL.*$m lora: all gradients as one vector" "$tmp/$mode.err" || fail "$mode: $m LoRA gradients not flagged"
      done
      ! grep -q "^FAIL.* full" "$tmp/$mode.err" || fail "$mode: the fault is in LoRA only, but a full-model check failed" ;;
    adamw)
      [ $rc -eq 1 ] || fail "$mode: must fail (exit 1), exit $rc"
      grep -q "^FAIL.*sample full: step" "$tmp/$mode.err" || fail "$mode: full training run not flagged"
      grep -q "^FAIL.*sample lora: step" "$tmp/$mode.err" || fail "$mode: LoRA training run not flagged"
      ! grep -v "sample full: step\|sample lora: step" "$tmp/$mode.err" | grep -q "^FAIL" \
        || fail "$mode: the fault is in the optimizer only, but another check failed" ;;
  esac
done
LT_MODEL_CUDA_SELFTEST=nonsense "$t" >/dev/null 2>&1
[ $? -eq 2 ] || fail "an unknown self-test mode must exit 2"

if [ $fails -ne 0 ]; then echo "test_model_cuda_selftest: $fails failure(s)" >&2; exit 1; fi
echo "test_model_cuda_selftest: all checks passed"
