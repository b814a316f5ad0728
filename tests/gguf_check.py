#!/usr/bin/env python3
"""gguf_check.py -- checks a GGUF file luxtrain wrote against its source, with
llama.cpp's own Python package `gguf` (tools/requirements-test.txt) as the
reader and as the reference for names, keys and quantization:

  gguf_check.py check FILE.gguf MODEL_DIR TYPE [ADAPTER_DIR]
      metadata: general.*, the <arch>.* hyperparameters from config.json, the
      tokenizer (tokens, token types, merges, bos/eos/pad, add_bos_token) from
      tokenizer.json / tokenizer_config.json, the chat template; tensors: the
      names gguf's tensor map gives each Hugging Face tensor (nothing missing,
      nothing extra), shapes, types (1-D in F32), and values: the safetensors
      weights (plus scale * B @ A of the adapter), q/k rows permuted for arch
      "llama" as llama.cpp's converter does, Gemma's norm weights as 1 + w
      (llama.cpp's Gemma norms multiply by the stored weight); the Gemma
      keys (sliding window and its layer pattern, soft-caps, the local RoPE
      base); linear RoPE scaling; then F32 equal, F16 equal to
      numpy's rounding, BF16 and Q8_0 byte for byte equal to gguf.quants.quantize;
      Q8_0 dequantized within half a step (+ the fp16 rounding of the
      scale) of the f32 values.
  gguf_check.py spm FILE.gguf MODEL_DIR FIXTURE.json NAME
      the tokenizer keys as `check` wants them, and the ids llama.cpp gave
      the fixture's texts (fixture["llama_cpp"][NAME]) equal to those of
      Hugging Face `tokenizers` on MODEL_DIR/tokenizer.json.
  gguf_check.py same A.gguf B.gguf
      the same metadata (general.name aside: it is the folder's name) and
      the same tensors, byte for byte.
  gguf_check.py adapter MODEL_DIR OUT_DIR
      writes a PEFT LoRA adapter (r 4, alpha 8, q/v/down -- qkv/gate_up/down
      for fused projections (phi3) --, random A and B) for the model, in
      PEFT's format.
Prints "ok ..." lines; exits 1 on the first mismatch.
"""
import json
import math
import os
import struct
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as Q

ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "olmo2": "olmo2",
        "gemma2": "gemma2", "gemma3_text": "gemma3", "phi3": "phi3"}
GARCH = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "qwen3": gguf.MODEL_ARCH.QWEN3,
         "olmo2": gguf.MODEL_ARCH.OLMO2, "gemma2": gguf.MODEL_ARCH.GEMMA2, "gemma3": gguf.MODEL_ARCH.GEMMA3,
         "phi3": gguf.MODEL_ARCH.PHI3}
GEMMA = ("gemma2", "gemma3")
TYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        b = data[h["data_offsets"][0]:h["data_offsets"][1]]
        if h["dtype"] == "F32":
            a = np.frombuffer(b, dtype="<f4")
        elif h["dtype"] == "BF16":
            a = (np.frombuffer(b, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif h["dtype"] == "F16":
            a = np.frombuffer(b, dtype="<f2").astype(np.float32)
        else:
            fail(f"{path}: {name} dtype {h['dtype']}")
        out[name] = a.reshape(h["shape"]).astype(np.float32)
    return out


# Gemma3ForConditionalGeneration: its language model's tensors (both layouts transformers 5.24 loads) under
# the causal LM's names; the vision tower and projector are not in the GGUF (llama.cpp's mmproj file)
WRAPPED = (("language_model.model.", "model."), ("language_model.lm_head.", "lm_head."),
           ("model.language_model.", "model."))
OTHER_TOWERS = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")


def lm_name(n):
    for a, b in WRAPPED:
        if n.startswith(a):
            return b + n[len(a):]
    return n


def load_config(mdir):
    """config.json; of a multimodal class, its text_config with the top level's dtype and token ids over it"""
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    if "text_config" not in cfg:
        return cfg
    text = dict(cfg["text_config"])
    text.update({k: cfg[k] for k in ("torch_dtype", "dtype", "bos_token_id", "eos_token_id", "pad_token_id",
                                     "tie_word_embeddings") if k in cfg})
    return text


def read_model(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    w = {}
    for f in files:
        w.update(read_safetensors(os.path.join(d, f)))
    return {lm_name(n): a for n, a in w.items() if not n.startswith(OTHER_TOWERS)}


def permute(w, n_head):  # llama.cpp's converter: rotate-half pairs -> interleaved pairs, per head
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(cfg):  # transformers' _compute_llama3_parameters, as divisors of each frequency
    rs = cfg["rope_scaling"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    freqs = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    lo, hi = rs["original_max_position_embeddings"] / rs["low_freq_factor"], \
        rs["original_max_position_embeddings"] / rs["high_freq_factor"]
    out = []
    for f in freqs:
        wl = 2 * np.pi / f
        if wl < hi:
            out.append(1.0)
        elif wl > lo:
            out.append(rs["factor"])
        else:
            s = (rs["original_max_position_embeddings"] / wl - rs["low_freq_factor"]) / \
                (rs["high_freq_factor"] - rs["low_freq_factor"])
            out.append(1.0 / ((1 - s) / rs["factor"] + s))
    return np.array(out, dtype=np.float32)


def rotary_dims(cfg, hd):  # transformers: int(head_dim * partial_rotary_factor)
    prf = cfg.get("partial_rotary_factor") or (cfg.get("rope_scaling") or {}).get("partial_rotary_factor", 1.0)
    return int(hd * prf)


def longrope_attention_factor(cfg, rs, omp):  # transformers' _compute_longrope_parameters
    if rs.get("attention_factor") is not None:
        return rs["attention_factor"]
    factor = rs.get("factor") or cfg["max_position_embeddings"] / omp
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(omp))


def field(r, key):
    f = r.get_field(key)
    return None if f is None else f.contents()


def check(path, mdir, typ, adapter):
    cfg = load_config(mdir)
    tj = json.load(open(os.path.join(mdir, "tokenizer.json")))
    tcp = os.path.join(mdir, "tokenizer_config.json")
    tc = json.load(open(tcp)) if os.path.exists(tcp) else {}
    r = gguf.GGUFReader(path)
    arch = ARCH[cfg["model_type"]]
    K = gguf.Keys
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    V, L = cfg["vocab_size"], cfg["num_hidden_layers"]
    ctx = cfg["max_position_embeddings"]
    if cfg.get("sliding_window") and cfg.get("use_sliding_window", True) and arch not in GEMMA:
        ctx = min(ctx, cfg["sliding_window"])  # llama.cpp's llama / qwen graphs attend to all positions
    want = {
        K.General.ARCHITECTURE: arch, K.General.ALIGNMENT: 32,
        K.LLM.CONTEXT_LENGTH.format(arch=arch): ctx,
        K.LLM.EMBEDDING_LENGTH.format(arch=arch): cfg["hidden_size"],
        K.LLM.BLOCK_COUNT.format(arch=arch): L,
        K.LLM.FEED_FORWARD_LENGTH.format(arch=arch): cfg["intermediate_size"],
        K.LLM.VOCAB_SIZE.format(arch=arch): V,
        K.Attention.HEAD_COUNT.format(arch=arch): nh,
        K.Attention.HEAD_COUNT_KV.format(arch=arch): nkv,
        K.Attention.KEY_LENGTH.format(arch=arch): hd,
        K.Attention.VALUE_LENGTH.format(arch=arch): hd,
        K.Rope.DIMENSION_COUNT.format(arch=arch): rotary_dims(cfg, hd),
        K.General.FILE_TYPE: {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7}[typ],
    }
    for k, v in want.items():
        if field(r, k) != v:
            fail(f"{k} = {field(r, k)!r}, expected {v!r}")
    for k, v in ((K.Attention.LAYERNORM_RMS_EPS.format(arch=arch), cfg.get("rms_norm_eps", 1e-6)),
                 (K.Rope.FREQ_BASE.format(arch=arch), cfg.get("rope_theta", 10000.0))):
        if field(r, k) != np.float32(v):
            fail(f"{k} = {field(r, k)!r}, expected {v!r}")
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) == "linear":  # llama.cpp divides the positions by the factor
        if field(r, K.Rope.SCALING_TYPE.format(arch=arch)) != "linear" or \
                field(r, K.Rope.SCALING_FACTOR.format(arch=arch)) != np.float32(rs["factor"]):
            fail(f"rope.scaling.type / factor: linear {rs['factor']} expected")
        print(f"ok   rope scaling linear, factor {rs['factor']}")
    elif field(r, K.Rope.SCALING_TYPE.format(arch=arch)) is not None:
        fail("rope.scaling.type written without linear rope_scaling")
    longrope = rs.get("rope_type", rs.get("type")) in ("longrope", "su")
    if longrope:  # llama.cpp: cos / sin times attn_factor; long factors past original_context_length
        omp = cfg.get("original_max_position_embeddings", rs.get("original_max_position_embeddings"))
        want_attn = longrope_attention_factor(cfg, rs, omp)
        if field(r, K.Rope.SCALING_ATTN_FACTOR.format(arch=arch)) != np.float32(want_attn) or \
                field(r, K.Rope.SCALING_ORIG_CTX_LEN.format(arch=arch)) != omp:
            fail(f"rope.scaling.attn_factor / original_context_length: {want_attn} / {omp} expected")
        print(f"ok   longrope: attn_factor {want_attn:.6f}, original_context_length {omp}")
    elif field(r, K.Rope.SCALING_ATTN_FACTOR.format(arch=arch)) is not None:
        fail("rope.scaling.attn_factor written without longrope")
    if arch in GEMMA:
        check_gemma(r, cfg, arch)
    if (field(r, K.General.QUANTIZATION_VERSION) is not None) != (typ == "q8_0"):
        fail("general.quantization_version present iff quantized")
    print(f"ok   metadata of {arch} ({len(r.fields)} keys)")

    check_tokenizer(r, tj, tc, cfg, V)

    # tensors
    w = read_model(mdir)
    if adapter:
        ac = json.load(open(os.path.join(adapter, "adapter_config.json")))
        scale = ac["lora_alpha"] / ac["r"]
        aw = read_safetensors(os.path.join(adapter, "adapter_model.safetensors"))
        for n, A in aw.items():
            if ".lora_A." in n:
                base = lm_name(n.replace("base_model.model.", "").replace(".lora_A.weight", ".weight"))
                w[base] = w[base] + scale * (aw[n.replace("lora_A", "lora_B")] @ A)
        # trained embeddings replace their rows (PEFT's merge_and_unload): trainable_token_indices
        # (token_adapter.trainable_tokens_delta holds the rows' values) or modules_to_save (whole tables)
        tti = ac.get("trainable_token_indices")
        for m in ("model.embed_tokens", "lm_head"):
            delta = aw.get(f"base_model.model.{m}.token_adapter.trainable_tokens_delta")
            table = aw.get(f"base_model.model.{m}.weight")
            if delta is not None:
                ids = tti if isinstance(tti, list) else tti[m.split(".")[-1]]
                w[m + ".weight"] = w[m + ".weight"].copy()
                w[m + ".weight"][ids] = delta
            elif table is not None:
                w[m + ".weight"] = table
    tmap = gguf.get_tensor_name_map(GARCH[arch], L)
    expect = {}
    for n, a in w.items():
        if n == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue
        g = tmap.get_name(n, try_suffixes=(".weight", ".bias"))
        if g is None:
            fail(f"gguf's tensor map has no name for {n}")
        if arch == "llama" and (".q_proj." in n or ".k_proj." in n):
            a = permute(a, nh if ".q_proj." in n else nkv)
        if arch in GEMMA and n.endswith("norm.weight"):
            a = a + np.float32(1.0)
        expect[g] = a
    if cfg.get("tie_word_embeddings") and arch == "olmo2":
        expect["output.weight"] = w["model.embed_tokens.weight"]
    if (cfg.get("rope_scaling") or {}).get("rope_type") == "llama3":
        expect["rope_freqs.weight"] = llama3_rope_factors(cfg)
    if longrope:  # the factor lists as they are (llama.cpp divides each frequency by them)
        expect["rope_factors_long.weight"] = np.array(rs["long_factor"], dtype=np.float32)
        expect["rope_factors_short.weight"] = np.array(rs["short_factor"], dtype=np.float32)
    got = {t.name: t for t in r.tensors}
    if set(got) != set(expect):
        fail(f"tensors: extra {sorted(set(got) - set(expect))}, missing {sorted(set(expect) - set(got))}")
    worst = 0.0
    for name, a in expect.items():
        t = got[name]
        if list(t.shape) != list(a.shape[::-1]):
            fail(f"{name}: shape {list(t.shape)}, expected {list(a.shape[::-1])}")
        qt = TYPES[typ] if a.ndim == 2 else Q.F32
        if qt == Q.Q8_0 and a.shape[1] % 32:
            qt = Q.F16
        if t.tensor_type != qt:
            fail(f"{name}: type {t.tensor_type.name}, expected {qt.name}")
        raw = np.asarray(t.data)
        if qt == Q.F32:
            ok = np.array_equal(raw.reshape(a.shape), a.astype(np.float32)) if name != "rope_freqs.weight" else \
                np.allclose(raw, a, rtol=1e-5)
        elif qt == Q.F16:
            ok = np.array_equal(raw.reshape(a.shape).view(np.uint16), a.astype(np.float16).view(np.uint16))
        else:  # BF16 / Q8_0: gguf's own quantization, byte for byte
            ok = np.array_equal(raw.reshape(-1).view(np.uint8), gguf.quants.quantize(a, qt).reshape(-1).view(np.uint8))
            deq = gguf.quants.dequantize(raw, qt).reshape(a.shape)
            if qt == Q.Q8_0:
                step = np.repeat(np.abs(a.reshape(-1, 32)).max(axis=1) / 127.0, 32).reshape(a.shape)
                worst = max(worst, float((np.abs(deq - a) / np.maximum(step, 1e-30)).max()))
                # half a step, plus up to 127 times the fp16 rounding of the scale (2^-11 relative)
                ok = ok and bool(np.all(np.abs(deq - a) <= (0.5 + 127 * 2.0**-11) * step + 1e-7))
        if not ok:
            fail(f"{name}: values differ from the source ({qt.name})")
    print(f"ok   {len(expect)} tensors as {typ}" + (f" (q8_0: worst error {worst:.3f} step)" if typ == "q8_0" else "")
          + (" with the adapter merged" if adapter else ""))


def spm_space_prefix(tj):
    """a SentencePiece-style tokenizer.json (BPE with byte_fallback) -> whether llama.cpp must prepend a
    space to each text fragment (Prepend normalizer, or Metaspace prepending), else None"""
    m = tj["model"]
    if m["type"] != "BPE" or not m.get("byte_fallback"):
        return None
    norm, pre = tj.get("normalizer") or {}, tj.get("pre_tokenizer") or {}
    if norm.get("type") == "Sequence":
        return any(n["type"] == "Prepend" for n in norm["normalizers"])
    if pre.get("type") == "Metaspace":
        return pre.get("prepend_scheme", "always" if pre.get("add_prefix_space", True) else "never") != "never"
    return False


def check_tokenizer(r, tj, tc, cfg, V):
    """the tokenizer.ggml.* keys against tokenizer.json / tokenizer_config.json / config.json:
    byte-level BPE as llama.cpp's "gpt2" model (merges, pre-tokenizer name), SentencePiece-style
    BPE as its "llama" model (scores from the merge ranks, byte / unknown token types, space prefix)"""
    K = gguf.Keys
    space_prefix = spm_space_prefix(tj)
    spm = space_prefix is not None
    unk = tj["model"].get("unk_token") if spm else None
    if field(r, K.Tokenizer.MODEL) != ("llama" if spm else "gpt2"):
        fail(f"tokenizer.ggml.model = {field(r, K.Tokenizer.MODEL)!r}")
    tokens, types = [f"[PAD{i}]" for i in range(V)], [gguf.TokenType.UNUSED] * V
    for t, i in tj["model"]["vocab"].items():
        tokens[i], types[i] = t, gguf.TokenType.NORMAL
        if spm and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            types[i] = gguf.TokenType.BYTE
    for a in tj["added_tokens"]:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED
        if a["content"] == unk:
            types[a["id"]] = gguf.TokenType.UNKNOWN
    if field(r, K.Tokenizer.LIST) != tokens:
        fail("tokenizer.ggml.tokens differ from tokenizer.json")
    if field(r, K.Tokenizer.TOKEN_TYPE) != [int(t) for t in types]:
        fail("tokenizer.ggml.token_type differ")
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    ids = {t: i for t, i in tj["model"]["vocab"].items()}
    ids.update({a["content"]: a["id"] for a in tj["added_tokens"]})
    if spm:
        # llama.cpp merges the pair making the best-scoring token; BPE the pair of the lowest rank
        scores = [None] * V
        for rank, m in enumerate(merges):
            i = ids.get(m.replace(" ", "", 1))
            if i is not None and scores[i] is None:
                scores[i] = -float(rank)
        scores = np.array([-float(len(merges)) - 1 if x is None else x for x in scores], dtype=np.float32)
        got = np.array(field(r, K.Tokenizer.SCORES), dtype=np.float32)
        if not np.array_equal(got, scores):
            fail("tokenizer.ggml.scores are not minus the rank of each token's first merge")
        if field(r, K.Tokenizer.MERGES) is not None:
            fail("tokenizer.ggml.merges written for a SentencePiece-style tokenizer")
        if field(r, K.Tokenizer.ADD_PREFIX) != space_prefix:
            fail(f"add_space_prefix {field(r, K.Tokenizer.ADD_PREFIX)}, expected {space_prefix}")
        if field(r, K.Tokenizer.UNK_ID) != ids.get(unk):
            fail(f"unknown_token_id {field(r, K.Tokenizer.UNK_ID)}, expected {ids.get(unk)}")
        want_pre = "default"
    else:
        if field(r, K.Tokenizer.MERGES) != merges:
            fail("tokenizer.ggml.merges differ")
        pre = json.dumps(tj["pre_tokenizer"])
        ignore = tj["model"].get("ignore_merges", False)
        want_pre = "qwen2" if "\\\\p{N}|" in pre else ("llama-bpe" if ignore else "dbrx") \
            if "\\\\p{N}{1,3}" in pre else "gpt-2"
    if field(r, K.Tokenizer.PRE) != want_pre:
        fail(f"tokenizer.ggml.pre = {field(r, K.Tokenizer.PRE)}, expected {want_pre}")
    post = tj.get("post_processor") or {}
    bos_added = [s for s in post.get("single", []) if "SpecialToken" in s][:1]
    add_bos = bool(bos_added) and "Sequence" not in json.dumps(post["single"][0])
    if field(r, K.Tokenizer.ADD_BOS) != add_bos:
        fail(f"add_bos_token {field(r, K.Tokenizer.ADD_BOS)}, expected {add_bos}")
    bos = ids[bos_added[0]["SpecialToken"]["id"]] if add_bos else cfg.get("bos_token_id")
    eos = cfg.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos
    pad = ids.get(tc["pad_token"]) if isinstance(tc.get("pad_token"), str) else None
    for k, v in ((K.Tokenizer.BOS_ID, bos), (K.Tokenizer.EOS_ID, eos), (K.Tokenizer.PAD_ID, pad)):
        if field(r, k) != v:
            fail(f"{k} = {field(r, k)}, expected {v}")
    if field(r, K.Tokenizer.CHAT_TEMPLATE) != tc.get("chat_template"):
        fail("tokenizer.chat_template differs from tokenizer_config.json")
    print(f"ok   tokenizer {'llama (SentencePiece-style)' if spm else 'gpt2'}: {V} tokens, {len(merges)} merges, "
          f"pre {want_pre}, bos {bos} eos {eos} pad {pad}" + (f" unk {ids.get(unk)} space prefix {space_prefix}" if spm else ""))



def spm_ids(path, mdir, fixture, name):
    """llama.cpp's ids (the fixture, from the GGUF export wrote of the same files) are Hugging Face
    tokenizers' for every text; and the file's tokenizer keys are as check_tokenizer wants them"""
    from tokenizers import Tokenizer

    cfg = json.load(open(os.path.join(mdir, "config.json")))
    tj = json.load(open(os.path.join(mdir, "tokenizer.json")))
    tcp = os.path.join(mdir, "tokenizer_config.json")
    tc = json.load(open(tcp)) if os.path.exists(tcp) else {}
    check_tokenizer(gguf.GGUFReader(path), tj, tc, cfg, cfg["vocab_size"])
    fx = json.load(open(fixture))
    tok = Tokenizer.from_file(os.path.join(mdir, "tokenizer.json"))
    metaspace = (tj.get("pre_tokenizer") or {}).get("type") == "Metaspace"
    space = tok.token_to_id("\u2581")
    specials = {a["id"] for a in tj["added_tokens"] if a["special"]}
    extra = 0
    for text, want in zip(fx["texts"], fx["llama_cpp"][name]):
        got = tok.encode(text, add_special_tokens=True).ids
        if metaspace:
            # tokenizers' Metaspace prepends no U+2581 to a piece that starts with a space (the text, or
            # what follows a special token), llama.cpp's add_space_prefix always does: llama.cpp may have
            # one "▁" token more right after BOS or a special token (docs/export.md); only those are dropped
            kept = []
            for j, t in enumerate(want):
                if t == space and j > 0 and want[j - 1] in specials and len(kept) < len(got) and \
                        got[len(kept)] != space:
                    extra += 1
                    continue
                kept.append(t)
            want = kept
        if got != want:
            fail(f"{name}: {text!r}: tokenizers {got}, llama.cpp {want}")
    print(f"ok   {name}: llama.cpp's ids = tokenizers' for {len(fx['texts'])} texts" +
          (f" but {extra} extra '▁' after BOS / a special token (Metaspace)" if extra else ""))


def check_gemma(r, cfg, arch):
    """the keys llama.cpp's gemma2 / gemma3 graphs read beyond the common ones"""
    K = gguf.Keys
    L = cfg["num_hidden_layers"]
    # transformers' layer_types, else Gemma 2's alternation from layer 0 / Gemma 3's pattern (every n-th full)
    period = 2 if arch == "gemma2" else cfg.get("sliding_window_pattern", 6)
    sliding = [t == "sliding_attention" for t in cfg["layer_types"]] if cfg.get("layer_types") else \
        [(i + 1) % period != 0 for i in range(L)]
    p = field(r, K.Attention.SLIDING_WINDOW_PATTERN.format(arch=arch))
    if not isinstance(p, int) or [p == 0 or i % p < p - 1 for i in range(L)] != sliding:
        fail(f"sliding_window_pattern {p!r} does not give llama.cpp the sliding layers {sliding}")
    want = {K.Attention.SLIDING_WINDOW.format(arch=arch): cfg["sliding_window"]}
    f32 = {}
    if arch == "gemma2":
        f32[K.LLM.ATTN_LOGIT_SOFTCAPPING.format(arch=arch)] = cfg["attn_logit_softcapping"]
        f32[K.LLM.FINAL_LOGIT_SOFTCAPPING.format(arch=arch)] = cfg["final_logit_softcapping"]
    else:
        f32[K.Rope.FREQ_BASE_SWA.format(arch=arch)] = cfg.get("rope_local_base_freq", 10000.0)
        for k in (K.LLM.ATTN_LOGIT_SOFTCAPPING, K.LLM.FINAL_LOGIT_SOFTCAPPING):
            if field(r, k.format(arch=arch)) is not None:
                fail(f"{k.format(arch=arch)} written: llama.cpp's gemma3 graph has no soft-cap")
    for k, v in want.items():
        if field(r, k) != v:
            fail(f"{k} = {field(r, k)!r}, expected {v!r}")
    for k, v in f32.items():
        if field(r, k) != np.float32(v):
            fail(f"{k} = {field(r, k)!r}, expected {v!r}")
    print(f"ok   {arch}: sliding window {cfg['sliding_window']} with pattern {p}, " +
          ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in f32.items()))


def make_adapter(mdir, out):
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    w = read_model(mdir)
    rng = np.random.default_rng(7)
    r, tensors = 4, {}
    # fused projections (phi3): PEFT adapts the fused modules whole
    mods = (("self_attn", "qkv_proj"), ("mlp", "gate_up_proj"), ("mlp", "down_proj")) \
        if "model.layers.0.self_attn.qkv_proj.weight" in w else \
        (("self_attn", "q_proj"), ("self_attn", "v_proj"), ("mlp", "down_proj"))
    for l in range(cfg["num_hidden_layers"]):
        for blk, proj in mods:
            o, i = w[f"model.layers.{l}.{blk}.{proj}.weight"].shape
            p = f"base_model.model.model.layers.{l}.{blk}.{proj}"
            tensors[p + ".lora_A.weight"] = rng.normal(0, 0.1, (r, i)).astype(np.float32)
            tensors[p + ".lora_B.weight"] = rng.normal(0, 0.1, (o, r)).astype(np.float32)
    os.makedirs(out, exist_ok=True)
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for n, a in tensors.items():
        header[n] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(out, "adapter_model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    ac = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 8, "lora_dropout": 0.0,
          "target_modules": [p for _, p in mods], "bias": "none", "use_rslora": False,
          "fan_in_fan_out": False, "base_model_name_or_path": mdir}
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(ac, f, indent=2)


def same(pa, pb):
    a, b = gguf.GGUFReader(pa), gguf.GGUFReader(pb)
    fa = {k: f.contents() for k, f in a.fields.items() if k != gguf.Keys.General.NAME}
    fb = {k: f.contents() for k, f in b.fields.items() if k != gguf.Keys.General.NAME}
    if fa != fb:
        fail(f"metadata differs: {sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))}")
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    if list(ta) != list(tb):
        fail("tensor lists differ")
    for n, t in ta.items():
        u = tb[n]
        if t.tensor_type != u.tensor_type or list(t.shape) != list(u.shape) or \
                np.asarray(t.data).tobytes() != np.asarray(u.data).tobytes():
            fail(f"tensor {n} differs")
    print(f"ok   same metadata and {len(ta)} tensors")


if __name__ == "__main__":
    if len(sys.argv) in (5, 6) and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) == 6 else None)
    elif len(sys.argv) == 6 and sys.argv[1] == "spm":
        spm_ids(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "same":
        same(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "adapter":
        make_adapter(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
