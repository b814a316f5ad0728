#!/usr/bin/env bash
# test_sample_model.sh -- the bundled toy model data/sample/model/ (made by
# tools/gen_sample_model.py) is what the quickstart needs. Checks, with
# Hugging Face `tokenizers` ($LT_PYTHON) as the reference:
#   - tokenizer.json loads; it is the feature set luxtrain's tokenizer supports
#     (Split on the exact Llama 3 pattern + ByteLevel without regex, BPE with
#     ignore_merges, all 256 byte tokens, no normalizer / post-processor) and
#     the three ChatML special tokens are single ids;
#   - every string of data/sample/*.jsonl (and a few texts outside the
#     sample: other scripts, emoji, control characters) encodes without
#     unknown tokens and decodes back to itself;
#   - tokenizer_config.json has a plain ChatML chat_template, eos <|im_end|>;
#   - config.json / model.safetensors agree (BF16, tied, vocab >= tokenizer
#     size, eos_token_id = <|im_end|>) and the folder stays under 3 MB.
# Then, if `$LT_BIN inspect` runs (exit 77 otherwise, after the checks above):
#   - `luxtrain inspect data/sample/model --json` reports the config's sizes;
#   - `luxtrain tokenize` on the sample writes shards whose ids equal
#     tokenizers' ids for the ChatML-rendered instructions / raw text + EOS,
#     with the assistant turns (and only they) as targets.
set -u
src="${LT_SOURCE_DIR:?LT_SOURCE_DIR not set}"
bin="${LT_BIN:-}"
py="${LT_PYTHON:-}"
tmp="${LT_TMP:-$(mktemp -d)}"
mkdir -p "$tmp"
model="$src/data/sample/model"

if [ -z "$py" ] || ! "$py" -c "import tokenizers" 2>/dev/null; then
  echo "SKIP: LT_PYTHON with tokenizers not available" >&2; exit 77
fi
if [ ! -f "$model/tokenizer.json" ]; then
  echo "FAIL: $model/tokenizer.json missing (run tools/gen_sample_model.py)" >&2; exit 1
fi

"$py" - "$src" <<'EOF' || exit 1
import glob, json, os, struct, sys
from tokenizers import Tokenizer
src = sys.argv[1]
d = os.path.join(src, "data", "sample", "model")
bad = []
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
tj = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
pt = tj["pre_tokenizer"]
try:
    split, bl = pt["pretokenizers"]
    if split["type"] != "Split" or split["pattern"] != {"Regex": LLAMA3} or split["behavior"] != "Isolated" \
            or split["invert"]:
        bad.append(f"pre_tokenizer Split is not the Llama 3 pattern (Isolated): {split}")
    if bl != {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}:
        bad.append(f"pre_tokenizer ByteLevel: {bl}")
except Exception as e:
    bad.append(f"pre_tokenizer is not Sequence[Split, ByteLevel]: {e}")
m = tj["model"]
if m["type"] != "BPE" or m.get("ignore_merges") is not True or m.get("byte_fallback"):
    bad.append("model is not byte-level BPE with ignore_merges")
if tj.get("normalizer") is not None or tj.get("post_processor") is not None:
    bad.append("normalizer / post_processor should be null")
if tj["decoder"]["type"] != "ByteLevel":
    bad.append("decoder is not ByteLevel")
# the 256 byte symbols of the GPT-2 byte-level alphabet
bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
missing = [chr(c) for c in cs if chr(c) not in m["vocab"]]
if missing:
    bad.append(f"{len(missing)} byte tokens missing from the vocabulary")
ids = {}
for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]:
    ids[s] = tok.token_to_id(s)
    e = tok.encode("a" + s + "b", add_special_tokens=False).ids
    if ids[s] is None or ids[s] not in e or len(e) != 3:
        bad.append(f"special {s} is not a single id: {e}")
nv = tok.get_vocab_size()
if not 1000 <= nv <= 4096:
    bad.append(f"vocab size {nv} (expected a small one, ~2048)")

texts = []
for p in sorted(glob.glob(os.path.join(src, "data", "sample", "*.jsonl"))):
    for line in open(p, encoding="utf-8"):
        if line.strip():
            stack = [json.loads(line)]
            while stack:
                o = stack.pop()
                if isinstance(o, str): texts.append(o)
                elif isinstance(o, dict): stack.extend(o.values())
                elif isinstance(o, list): stack.extend(o)
texts += ["Ελληνικά και русский, 中文 😀 \u0000\t\r\n  ‐ x", "Zuel 1234567 an 3,14 %", "  zwee  Leerzeechen \n\n"]
nb = nt = 0
for t in texts:
    e = tok.encode(t, add_special_tokens=False).ids
    back = tok.decode(e, skip_special_tokens=False)
    if back != t:
        bad.append(f"round trip fails for {t[:40]!r}: {back[:40]!r}")
    nb += len(t.encode()); nt += len(e)
if len(texts) < 50:
    bad.append(f"only {len(texts)} sample strings found")

tc = json.load(open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8"))
ct = tc.get("chat_template", "")
if "'<|im_start|>' + message['role'] + '" not in ct or "system" in ct or "add_generation_prompt" not in ct:
    bad.append("chat_template is not the plain ChatML one")
if tc.get("eos_token") != "<|im_end|>" or tc.get("pad_token") != "<|endoftext|>" or tc.get("bos_token"):
    bad.append(f"tokenizer_config tokens: eos {tc.get('eos_token')}, pad {tc.get('pad_token')}, bos {tc.get('bos_token')}")

cfg = json.load(open(os.path.join(d, "config.json")))
if cfg["architectures"] != ["LlamaForCausalLM"] or not cfg.get("tie_word_embeddings") \
        or cfg.get("torch_dtype") != "bfloat16":
    bad.append("config is not a tied BF16 LlamaForCausalLM")
if cfg["vocab_size"] < nv or cfg["vocab_size"] % 64:
    bad.append(f"config vocab_size {cfg['vocab_size']} vs tokenizer {nv}")
if cfg.get("eos_token_id") != ids["<|im_end|>"]:
    bad.append(f"config eos_token_id {cfg.get('eos_token_id')} != <|im_end|> id {ids['<|im_end|>']}")
raw = open(os.path.join(d, "model.safetensors"), "rb").read()
hn = struct.unpack("<Q", raw[:8])[0]
hdr = {k: v for k, v in json.loads(raw[8:8 + hn]).items() if k != "__metadata__"}
H, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
if hdr.get("model.embed_tokens.weight", {}).get("shape") != [V, H]:
    bad.append("embed_tokens shape")
if "lm_head.weight" in hdr:
    bad.append("lm_head.weight stored although embeddings are tied")
if {v["dtype"] for v in hdr.values()} != {"BF16"}:
    bad.append("tensors are not all BF16")
if len([k for k in hdr if k.endswith("self_attn.q_proj.weight")]) != L:
    bad.append("layer count")
total = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
if total > 3 * 1024 * 1024:
    bad.append(f"model folder is {total} bytes (> 3 MB)")
print(f"sample model: {nv} ids, {len(texts)} strings, {nt / nb:.3f} tokens/byte, folder {total} bytes")
for b in bad: print("FAIL:", b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF

# ---- the C side -------------------------------------------------------------
if [ -z "$bin" ] || ! "$bin" inspect "$model" --json >"$tmp/inspect.json" 2>"$tmp/err.txt"; then
  echo "SKIP: '$bin inspect' does not run: $(cat "$tmp/err.txt" 2>/dev/null | head -3)" >&2; exit 77
fi
"$py" - "$model" "$tmp/inspect.json" <<'EOF' || exit 1
import json, sys
d, js = sys.argv[1:3]
cfg = json.load(open(d + "/config.json")); got = json.load(open(js))
want = {"architecture": "LlamaForCausalLM", "num_layers": cfg["num_hidden_layers"],
        "hidden_size": cfg["hidden_size"], "vocab_size": cfg["vocab_size"], "num_heads": cfg["num_attention_heads"],
        "num_kv_heads": cfg["num_key_value_heads"], "intermediate_size": cfg["intermediate_size"],
        "head_dim": cfg["hidden_size"] // cfg["num_attention_heads"], "tied_embeddings": True, "dtypes": ["BF16"]}
H, V, I, L = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
kv = cfg["num_key_value_heads"] * (H // cfg["num_attention_heads"])
want["num_parameters"] = V * H + L * (2 * H * H + 2 * H * kv + 3 * H * I + 2 * H) + H
bad = [f"inspect --json {k} = {got.get(k)!r}, expected {v!r}" for k, v in want.items() if got.get(k) != v]
for b in bad: print("FAIL:", b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF

rm -rf "$tmp/shards"
if ! "$bin" tokenize --tokenizer "$model" --input "$src/data/sample/luxit_sample.jsonl" \
    "$src/data/sample/text.jsonl" --out "$tmp/shards" >"$tmp/tok.txt" 2>&1; then
  echo "FAIL: luxtrain tokenize with the sample tokenizer: $(tail -5 "$tmp/tok.txt")" >&2; exit 1
fi
"$py" -c "import h5py" 2>/dev/null || { echo "SKIP: h5py not available for the shard check" >&2; exit 77; }
"$py" - "$src" "$tmp/shards" <<'EOF' || exit 1
import glob, json, os, sys
import h5py
from tokenizers import Tokenizer
src, out = sys.argv[1:3]
tok = Tokenizer.from_file(os.path.join(src, "data/sample/model/tokenizer.json"))
im_end = tok.token_to_id("<|im_end|>")
want = []  # (ids, mask) per record, in input order
for name in ["luxit_sample.jsonl", "text.jsonl"]:
    for line in open(os.path.join(src, "data/sample", name), encoding="utf-8"):
        if not line.strip(): continue
        r = json.loads(line)
        if "text" in r:
            ids = tok.encode(r["text"], add_special_tokens=False).ids + [im_end]
            want.append((ids, [0] + [1] * (len(ids) - 1)))
            continue
        user = r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")
        head = ("<|im_start|>system\n" + r["system"] + "<|im_end|>\n" if r.get("system") else "") \
            + "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n"
        text = head + r.get("output", r.get("answer", "")) + "<|im_end|>\n"
        enc = tok.encode(text, add_special_tokens=False)
        # offsets are in characters; the span is [len(head), len(text) - 1) in characters
        a, b = len(head), len(text) - 1
        want.append((enc.ids, [1 if a <= s < b else 0 for s, _ in enc.offsets]))
got = []
for p in sorted(glob.glob(out + "/train-*.h5")) + sorted(glob.glob(out + "/val-*.h5")):
    f = h5py.File(p, "r")
    t, m, off = f["tokens"][:], f["loss_mask"][:], f["doc_offsets"][:]
    for k in range(len(off) - 1):
        got.append((t[off[k]:off[k + 1]].tolist(), m[off[k]:off[k + 1]].tolist()))
bad = []
if sorted(map(str, got)) != sorted(map(str, want)):
    wanted = {str(w) for w in want}
    miss = [g for g in got if str(g) not in wanted]
    bad.append(f"{len(miss)} of {len(got)} shard documents differ from tokenizers' ids/mask"
               + (f"; first: {tok.decode(miss[0][0], skip_special_tokens=False)[:80]!r}" if miss else ""))
if len(got) != len(want):
    bad.append(f"{len(got)} documents in the shards, expected {len(want)}")
for b in bad: print("FAIL:", b, file=sys.stderr)
print(f"shards: {len(got)} documents match tokenizers")
sys.exit(1 if bad else 0)
EOF
echo "test_sample_model: all checks passed"
