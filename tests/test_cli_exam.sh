#!/usr/bin/env bash
# test_cli_exam.sh -- `luxtrain eval --tasks` on what the project owns (the
# sample model, its tokenizer and data/sample/exam_lb.jsonl), so a user's
# clone tests it without ../shared (test_eval_mc keeps the exactness against
# the harness on real tokenizers where ../shared exists). Checked:
#  - the results file: every question once, ll/tokens/chars/bytes per choice,
#    pred / pred_norm / pred_bytes the argmax of ll, ll/chars, ll/bytes (ties
#    to the first), acc and the categories their means, the harness's stderr;
#  - with the reference `tokenizers` ($LT_PYTHON): each choice's continuation
#    tokens split as docs/evaluation.md says (whole[len(ctx):]) and its ll the
#    sum of `luxtrain score` log-probabilities over them (packed requests =
#    one sequence at a time);
#  - eval --compare of a results file with itself: no difference.
set -uo pipefail
bin="${LT_BIN:?}"
src="${LT_SOURCE_DIR:?}"
py="${LT_PYTHON:-}"
tmp="${LT_TMP:-/tmp/test_cli_exam}"
model="$src/data/sample/model"
exam="$src/data/sample/exam_lb.jsonl"
rm -rf "$tmp"; mkdir -p "$tmp"
[[ -n $py ]] && "$py" -c "import tokenizers" 2>/dev/null || {
    echo "SKIP: LT_PYTHON='$py' cannot import tokenizers (tools/setup-deps.sh makes .venv)"; exit 77; }

"$bin" eval --model "$model" --tasks "$exam" --device cpu --threads 2 --batch 2 --seq-len 256 \
    --output "$tmp/exam.json" >"$tmp/eval.log" 2>&1 || { echo "FAIL eval --tasks:"; cat "$tmp/eval.log"; exit 1; }
cat "$tmp/eval.log"
"$bin" eval --compare "$tmp/exam.json" "$tmp/exam.json" >"$tmp/compare.log" 2>&1 \
    || { echo "FAIL eval --compare of a file with itself:"; cat "$tmp/compare.log"; exit 1; }

"$py" - "$bin" "$model" "$exam" "$tmp/exam.json" "$tmp/compare.log" <<'EOF'
import json, math, os, re, subprocess, sys
from tokenizers import Tokenizer
bin_, model, exam, res_path, compare_log = sys.argv[1:]
qs = [json.loads(l) for l in open(exam, encoding="utf-8") if l.strip()]
res = json.load(open(res_path))
fails = 0
def check(ok, what):
    global fails
    print(("ok   " if ok else "FAIL ") + what)
    fails += not ok

check(res["format"] == "luxtrain-eval-1", "format luxtrain-eval-1")
got = {q["id"]: q for q in res["questions"]}
check(len(res["questions"]) == len(qs) == len(got), "every question once (%d)" % len(qs))
def argmax(xs):
    return max(range(len(xs)), key=lambda i: (xs[i], -i))
bad = []
for q in qs:
    r = got.get(q["id"])
    if r is None:
        bad.append(q["id"]); continue
    ch = q["choices"]
    ok = (r["answer"] == q["answer"] and r["category"] == q.get("category")
          and r["chars"] == [len(c) for c in ch] and r["bytes"] == [len(c.encode()) for c in ch]
          and len(r["ll"]) == len(ch) and all(x < 0 for x in r["ll"])
          and r["pred"] == argmax(r["ll"])
          and r["pred_norm"] == argmax([l / n for l, n in zip(r["ll"], r["chars"])])
          and r["pred_bytes"] == argmax([l / n for l, n in zip(r["ll"], r["bytes"])]))
    if not ok: bad.append(q["id"])
check(not bad, "per question: lengths, argmax of ll, ll/chars, ll/bytes %s" % (bad[:5] or ""))
def summary(rs):
    out = {"n": len(rs)}
    for m, p in (("acc", "pred"), ("acc_norm", "pred_norm"), ("acc_bytes", "pred_bytes")):
        xs = [1.0 if r[p] == r["answer"] else 0.0 for r in rs]
        mean = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
        out[m], out[m + "_stderr"] = mean, (sd / math.sqrt(len(xs)) if sd is not None else None)
    return out
def same(a, b):
    return all((a[k] is None and b[k] is None) or (a[k] is not None and b[k] is not None and abs(a[k] - b[k]) < 1e-9)
               for k in a)
check(same(summary(res["questions"]), res["overall"]), "overall: means and the harness's stderr")
cats = sorted({q.get("category") for q in qs})
check(sorted(res["categories"]) == cats and all(
    same(summary([r for r in res["questions"] if r["category"] == c]), res["categories"][c]) for c in cats),
    "categories %s" % cats)

# the continuation split and the log-likelihoods, against the reference tokenizer and `luxtrain score`
tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
worst, split_bad = 0.0, []
for q in qs[::4]:  # every fourth question: 7 of 27, all categories
    r = got[q["id"]]
    ctx = q["context"]
    for i, c in enumerate(q["choices"]):
        stripped = ctx.rstrip()  # trailing whitespace moves to the continuation
        cont = ctx[len(stripped):] + " " + c
        whole = tok.encode(stripped + cont).ids
        cids = tok.encode(stripped).ids
        conts = whole[len(cids):]
        if len(conts) != r["tokens"][i]: split_bad.append((q["id"], i, len(conts), r["tokens"][i]))
        out = subprocess.run([bin_, "score", "--model", model, "--ids", ",".join(map(str, whole)), "--device", "cpu",
                              "--threads", "1"], capture_output=True, text=True)
        if out.returncode:
            split_bad.append((q["id"], i, "score failed", out.stderr.strip())); continue
        lp = json.loads(out.stdout)["logprobs"]
        ll = sum(lp[-len(conts):])
        worst = max(worst, abs(ll - r["ll"][i]))
check(not split_bad, "continuation tokens = whole[len(ctx):] of the reference tokenizer %s" % (split_bad[:3] or ""))
check(worst < 1e-3, "ll = the sum of luxtrain score's log-probabilities (largest difference %.2g)" % worst)

log = open(compare_log).read()
check(re.search(r"^overall\s+%d\s+\S+\s+\S+\s+\+0\.0000\s+0\s+0\s+1$" % len(qs), log, re.M) is not None,
      "eval --compare of a file with itself: no difference, p = 1")
sys.exit(1 if fails else 0)
EOF
