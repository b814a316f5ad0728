#!/usr/bin/env bash
# test_bench_step.sh -- `luxtrain bench step` on the CPU with the sample
# model's shape (random weights), full fine-tuning and LoRA: it must run
# whole training steps and write JSON that follows bench/README.md
# (luxtrain-bench-step/1), with the FLOP counts recomputed here from the
# model's config by the stated formulas (PaLM convention) and tokens/s, MFU
# consistent with the step time and the peak. Timings are not checked (a
# smoke test on the CPU). The loss of random weights must be near ln(V).
# Bad options exit 2.
set -u
BIN=${LT_BIN:?LT_BIN not set}
SRC=${LT_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
PY=${LT_PYTHON:-python3}
[ -x "$PY" ] || PY=$(command -v python3 || true)
[ -n "$PY" ] || { echo "no python: skipping"; exit 77; }
TMP=${LT_TMP:-$(mktemp -d)}
rm -rf "$TMP" && mkdir -p "$TMP"
fail=0

for mode in full lora; do
  extra=""
  [ "$mode" = lora ] && extra="--lora-rank 8 --recompute"
  # shellcheck disable=SC2086
  if ! LT_SOURCE_DIR="$SRC" "$BIN" bench step --device cpu --shape sample --seq-len 48 --micro-batch 3 --steps 2 \
      --threads 1 $extra --json "$TMP/$mode.json" >"$TMP/$mode.txt" 2>"$TMP/$mode.err"; then
    echo "FAIL: bench step ($mode) exited with $?"; cat "$TMP/$mode.err"; fail=1; continue
  fi
  grep -q "tokens/s" "$TMP/$mode.txt" || { echo "FAIL: no table ($mode)"; fail=1; }
  "$PY" - "$TMP/$mode.json" "$SRC/data/sample/model/config.json" "$mode" <<'PYEOF' || fail=1
import json, math, sys
d, c, mode = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
bad = []
def need(ok, msg):
    if not ok: bad.append(msg)
def close(a, b, tol=1e-9): return abs(a - b) <= tol * max(1.0, abs(b))
need(d.get("schema") == "luxtrain-bench-step/1", "schema")
need(d["device"]["backend"] == "cpu", "device")
cf, p, fl, r, m = d["config"], d["params"], d["flops"], d["result"], d["memory"]
need(cf["mode"] == mode and cf["micro_batch"] == 3 and cf["seq_len"] == 48 and cf["steps"] == 2, "config")
need(cf["recompute"] == (mode == "lora") and cf["lora_rank"] == (8 if mode == "lora" else 0), "config flags")
C, I, V, L = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
Hq, Hkv, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
T, N = 48, 3 * 48
pmm = L * (2 * C * Hq * D + 2 * C * Hkv * D + 3 * C * I) + V * C
need(p["matmul"] == pmm, "P_mm %s != %s" % (p["matmul"], pmm))
total = V * C * (1 if c["tie_word_embeddings"] else 2) + C + L * (2 * C + 2 * C * Hq * D + 2 * C * Hkv * D + 3 * C * I)
if mode == "lora":
    r8 = 8
    plora = L * r8 * ((C + Hq * D) + 2 * (C + Hkv * D) + (Hq * D + C) + 2 * (C + I) + (I + C))
    need(p["lora"] == plora, "P_lora %s != %s" % (p["lora"], plora))
    need(p["trainable"] == plora and p["total"] == total + plora, "trainable / total")
    per_tok = 4 * pmm + 6 * plora + 12 * L * Hq * D * T
else:
    need(p["lora"] == 0 and p["trainable"] == total and p["total"] == total, "trainable / total")
    per_tok = 6 * pmm + 12 * L * Hq * D * T
need(close(fl["per_token"], per_tok), "flop/token %s != %s" % (fl["per_token"], per_tok))
need(close(fl["per_step"], per_tok * N), "flop/step")
ms = r["step_ms_all"]
need(len(ms) == 2 and all(x > 0 and math.isfinite(x) for x in ms), "step times")
need(close(r["step_ms"], sorted(ms)[0] / 2 + sorted(ms)[1] / 2, 1e-9), "median")
need(r["step_ms_min"] <= r["step_ms"] <= r["step_ms_max"], "min / max")
need(close(r["tokens_per_s"], N / (r["step_ms"] * 1e-3), 1e-9), "tokens/s")
need(close(r["tflops"], per_tok * r["tokens_per_s"] * 1e-12, 1e-9), "TFLOP/s")
need(d["peak"]["gemm_tflops"] > 0 and close(r["mfu_pct"], 100 * r["tflops"] / d["peak"]["gemm_tflops"], 1e-9), "MFU")
need(abs(r["loss_first"] - math.log(V)) < 0.5 and math.isfinite(r["loss_last"]), "loss %s vs ln V %s" % (r["loss_first"], math.log(V)))
need(m["peak_bytes"] > 0, "memory")
for b in bad: print("FAIL (%s):" % mode, b)
sys.exit(1 if bad else 0)
PYEOF
done
"$BIN" bench step --steps 0 >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || { echo "FAIL: --steps 0 gave rc $rc (expected 2)"; fail=1; }
"$BIN" bench step --nonsense >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || { echo "FAIL: unknown option gave rc $rc (expected 2)"; fail=1; }
"$BIN" bench step --device cpu --shape /nonexistent >/dev/null 2>"$TMP/bad.txt"; rc=$?
[ $rc -eq 1 ] && grep -q "nonexistent" "$TMP/bad.txt" || { echo "FAIL: missing shape folder gave rc $rc"; fail=1; }
[ $fail -eq 0 ] && echo "test_bench_step: ok"
exit $fail
