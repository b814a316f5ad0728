#!/usr/bin/env python3
"""gen_gguf_fixtures.py -- fixtures of the GGUF export tests (tests/fixtures/gguf/).

  tokenizers   (the test venv: tokenizers, tools/requirements-test.txt)
      tok_llama3/, tok_qwen2/: tokenizer.json + tokenizer_config.json of a
      128-token byte-level BPE (the smallest fixture vocabulary; the GGUF pads
      larger ones), built with Hugging Face `tokenizers` from the sample model's tokenizer:
      the 94 printable ASCII symbols, space and newline, its first merges
      whose parts are already in, and three special tokens. tok_llama3 splits
      with the Llama 3 (cl100k) regex, ignore_merges, and adds <|endoftext|>
      as BOS (TemplateProcessing); tok_qwen2 with Qwen2's regex, no BOS;
      tok_cl100k (OLMo 2's kind) with the Llama 3 regex, merges always
      applied, no BOS. olmo2_hd12/: an OLMo 2 model as the olmo2 fixture but
      with head_dim = hidden / heads (llama.cpp's olmo2 assumes it), random
      weights. gemma2_qs16/, gemma3_qs16/, gemma3_cg_qs16/: the gemma2 / gemma3 /
      gemma3_cg (Gemma3ForConditionalGeneration: in text_config) fixtures with
      query_pre_attn_scalar = head_dim (llama.cpp's gemma graphs scale
      attention by head_dim^-0.5 and read no query_pre_attn_scalar; the
      fixtures' 24 is refused), model.safetensors a link to the fixture's.
      lora_emb_new/, lora_emb_all/: LoRA adapters with trained embeddings
      (--train-embeddings new: trainable_token_indices; all: modules_to_save)
      for the llama / llama_tied fixtures (gen_adapters).
      phi3_short_o256/: the phi3_short fixture with original_max_position_embeddings
      256 (llama.cpp chooses LongRoPE's short factors only while its context,
      at least 256, is within the original length; see gen_phi3).
  logits LUXTRAIN  (tools/requirements-gguf.txt: llama-cpp-python, numpy)
      llama_cpp_logits.safetensors: for every model in models.txt and every
      type (f32, f16, bf16, q8_0), the GGUF that `LUXTRAIN export --gguf`
      writes, run through llama.cpp (llama-cpp-python) on TOKENS: logits
      (T, vocab) as "<model>.<type>", and "tokens".

  spm LUXTRAIN SHARED  (tools/requirements-gguf.txt)
      spm_ids.json: the ids llama.cpp gives a few texts (Luxembourgish with
      ë/é/ä, digits, spaces, newlines, emoji and other byte-fallback text,
      special tokens) with the SentencePiece-style tokenizers SHARED/tokenizers/
      {llama2,gemma3} (and Llama 2's in the Metaspace form) as `LUXTRAIN export --gguf` writes them
      (tests/test_gguf_spm.sh checks they are the ids of Hugging Face
      `tokenizers` on the same files).
  spm-model NAME SHARED/tokenizers OUT  (numpy)
      the model folder spm exports: its family fixture's config at the real
      vocabulary size, zero weights, the tokenizer files linked.

models.txt: one line per model, "<name> <model folder> <tokenizer folder or -> [<adapter folder>]",
paths relative to the source tree (the tests read it too).
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
OUT = os.path.join(SRC, "tests", "fixtures", "gguf")
TYPES = ["f32", "f16", "bf16", "q8_0"]
TOKENS = [5, 17, 3, 42, 99, 120, 7, 64, 110, 2]
VOCAB = 128  # the smallest fixture vocabulary (llama_tied); larger ones are padded
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
             r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
            r"\s*[\r\n]+|\s+(?!\S)|\s+")


def models():
    with open(os.path.join(OUT, "models.txt")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, mdir, tdir, *adir = line.split()
                yield name, os.path.join(SRC, mdir), None if tdir == "-" else os.path.join(SRC, tdir), \
                    os.path.join(SRC, adir[0]) if adir else None


def gen_tokenizers():
    from tokenizers import Regex, Tokenizer, decoders, models as tm, pre_tokenizers, processors

    with open(os.path.join(SRC, "data", "sample", "model", "tokenizer.json")) as f:
        sample = json.load(f)
    with open(os.path.join(SRC, "data", "sample", "model", "tokenizer_config.json")) as f:
        template = json.load(f)["chat_template"]
    n = VOCAB - len(SPECIALS)
    vocab = {chr(c): i for i, c in enumerate(range(0x21, 0x7F))}  # byte-level '!'..'~'
    vocab["\u0120"] = len(vocab)  # 'Ġ' space
    vocab["\u010a"] = len(vocab)  # 'Ċ' newline
    merges = []
    for m in sample["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if len(vocab) >= n:
            break
        if a in vocab and b in vocab and a + b not in vocab:
            vocab[a + b] = len(vocab)
            merges.append((a, b))
    for kind, regex, bos, ignore in (("llama3", LLAMA3_RE, True, True), ("qwen2", QWEN2_RE, False, False),
                                     ("cl100k", LLAMA3_RE, False, False)):
        tok = Tokenizer(tm.BPE(vocab=dict(vocab), merges=list(merges), ignore_merges=ignore))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(regex), behavior="isolated"),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens(SPECIALS)
        if bos:
            tok.post_processor = processors.TemplateProcessing(
                single="<|endoftext|> $A", pair="<|endoftext|> $A <|endoftext|> $B",
                special_tokens=[("<|endoftext|>", vocab.__len__())])
        assert tok.get_vocab_size() == VOCAB
        d = os.path.join(OUT, "tok_" + kind)
        os.makedirs(d, exist_ok=True)
        tok.save(os.path.join(d, "tokenizer.json"))
        cfg = {"bos_token": "<|endoftext|>" if bos else None, "eos_token": "<|im_end|>",
               "pad_token": "<|endoftext|>", "chat_template": template,
               "tokenizer_class": "PreTrainedTokenizerFast"}
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
        print("wrote", d)


def gen_olmo2():
    """olmo2_hd12/: the olmo2 fixture's config with head_dim = hidden / heads (llama.cpp's olmo2
    graph assumes it; the fixture's head_dim 16 is refused), random weights (seed 0)"""
    import numpy as np

    with open(os.path.join(SRC, "tests", "fixtures", "models", "olmo2", "config.json")) as f:
        cfg = json.load(f)
    cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    H, F, V, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    rng = np.random.default_rng(0)
    t = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "lm_head.weight": (V, H)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        t.update({p + "self_attn.q_proj.weight": (q, H), p + "self_attn.k_proj.weight": (kv, H),
                  p + "self_attn.v_proj.weight": (kv, H), p + "self_attn.o_proj.weight": (H, q),
                  p + "self_attn.q_norm.weight": (q,), p + "self_attn.k_norm.weight": (kv,),
                  p + "post_attention_layernorm.weight": (H,), p + "post_feedforward_layernorm.weight": (H,),
                  p + "mlp.gate_proj.weight": (F, H), p + "mlp.up_proj.weight": (F, H),
                  p + "mlp.down_proj.weight": (H, F)})
    out = {}
    for n, shape in t.items():
        a = 1.0 + 0.1 * rng.standard_normal(shape) if len(shape) == 1 else 0.2 * rng.standard_normal(shape)
        out[n] = ("F32", a.astype(np.float32))
    d = os.path.join(OUT, "olmo2_hd12")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    write_safetensors(os.path.join(d, "model.safetensors"), out)
    print("wrote", d)


def config_variant(fixture, name, edits):
    """OUT/name/: the fixture tests/fixtures/models/<fixture> with its config.json updated by edits
    (a dict, or a function of the config giving one), model.safetensors a link to the fixture's"""
    src = os.path.join(SRC, "tests", "fixtures", "models", fixture)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(edits(cfg) if callable(edits) else edits)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    link = os.path.join(d, "model.safetensors")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.relpath(os.path.join(src, "model.safetensors"), d), link)
    print("wrote", d)


def gen_gemma():
    for fam in ("gemma2", "gemma3"):
        config_variant(fam, fam + "_qs16", lambda c: {"query_pre_attn_scalar": c["head_dim"]})
    # the multimodal class: the same edit inside its text_config
    config_variant("gemma3_cg", "gemma3_cg_qs16", lambda c: {"text_config": dict(
        c["text_config"], query_pre_attn_scalar=c["text_config"]["head_dim"])})


def gen_phi3():
    """phi3_short_o256/: the phi3_short fixture (LongRoPE, partial rotary 0.5, untied) with
    original_max_position_embeddings 256 and max_position_embeddings 512. llama.cpp picks LongRoPE's
    factors by its context (padded to a multiple of 256) against the original length, transformers
    and luxtrain by the sequence: only an original length >= 256 lets llama.cpp run the short factors
    on the fixture's 10 tokens, as luxtrain does."""
    config_variant("phi3_short", "phi3_short_o256",
                   {"original_max_position_embeddings": 256, "max_position_embeddings": 512})


def gen_adapters():
    """lora_emb_new/, lora_emb_all/: PEFT LoRA adapters (r 4, alpha 8, q/v/down, random, seed 3) with
    trained embeddings as `train --train-embeddings` writes them (lt_export.h, PEFT 0.21's format):
    new: trainable_token_indices {"embed_tokens": ids, "lm_head": ids} with the rows' values
    (token_adapter.trainable_tokens_delta) for the untied llama fixture, ids 3, 42, 110 (in TOKENS)
    and 153..159; all:
    modules_to_save ["embed_tokens"] with ensure_weight_tying and the whole table for the tied
    llama_tied fixture"""
    import numpy as np

    rng = np.random.default_rng(3)
    for kind, fixture in (("new", "llama"), ("all", "llama_tied")):
        with open(os.path.join(SRC, "tests", "fixtures", "models", fixture, "config.json")) as f:
            cfg = json.load(f)
        H, F, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
        hd = cfg.get("head_dim") or H // cfg["num_attention_heads"]
        q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
        t = {}
        for l in range(cfg["num_hidden_layers"]):
            for blk, proj, o, i in (("self_attn", "q_proj", q, H), ("self_attn", "v_proj", kv, H),
                                    ("mlp", "down_proj", H, F)):
                p = f"base_model.model.model.layers.{l}.{blk}.{proj}"
                t[p + ".lora_A.weight"] = ("F32", rng.normal(0, 0.1, (4, i)).astype(np.float32))
                t[p + ".lora_B.weight"] = ("F32", rng.normal(0, 0.1, (o, 4)).astype(np.float32))
        ac = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
              "target_modules": ["q_proj", "v_proj", "down_proj"], "bias": "none", "use_rslora": False,
              "fan_in_fan_out": False, "base_model_name_or_path": "tests/fixtures/models/" + fixture}
        if kind == "new":
            ids = sorted({3, 42, 110} | set(range(V - 7, V)))  # three of TOKENS: the input rows count too
            ac["trainable_token_indices"] = {"embed_tokens": ids, "lm_head": ids}
            for m in ("model.embed_tokens", "lm_head"):
                t[f"base_model.model.{m}.token_adapter.trainable_tokens_delta"] = \
                    ("F32", rng.normal(0, 0.5, (len(ids), H)).astype(np.float32))
        else:
            ac["modules_to_save"] = ["embed_tokens"]
            ac["ensure_weight_tying"] = True
            t["base_model.model.model.embed_tokens.weight"] = ("F32", rng.normal(0, 0.5, (V, H)).astype(np.float32))
        d = os.path.join(OUT, "lora_emb_" + kind)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump(ac, f, indent=2, sort_keys=True)
            f.write("\n")
        write_safetensors(os.path.join(d, "adapter_model.safetensors"), t)
        print("wrote", d)


# SentencePiece-style tokenizers (llama.cpp's "llama" model): the real files in ../shared/tokenizers,
# each with a family fixture's config at the vocabulary size of the model the tokenizer belongs to
SPM = [("llama2", "tests/fixtures/models/llama/config.json", 32000),
       ("gemma3", "tests/fixtures/gguf/gemma3_qs16/config.json", 262208),
       ("llama2_metaspace", "tests/fixtures/models/llama/config.json", 32000)]


def spm_tokenizer(name, shared_tokenizers, out):
    """out/tokenizer*.json for the tokenizer `name` of SPM: the real file, or for llama2_metaspace Llama 2's
    with its space escaping as the Metaspace pre-tokenizer of newer conversions (no normalizer,
    prepend_scheme always, split false: Mistral v0.3's form)"""
    src = os.path.join(shared_tokenizers, name.split("_")[0])
    if name.endswith("_metaspace"):
        with open(os.path.join(src, "tokenizer.json")) as f:
            tj = json.load(f)
        tj["normalizer"] = None
        tj["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                               "split": False}
        with open(os.path.join(out, "tokenizer.json"), "w") as f:
            json.dump(tj, f, ensure_ascii=False)
    else:
        os.symlink(os.path.abspath(os.path.join(src, "tokenizer.json")), os.path.join(out, "tokenizer.json"))
    os.symlink(os.path.abspath(os.path.join(src, "tokenizer_config.json")), os.path.join(out, "tokenizer_config.json"))
SPM_TEXTS = [
    "Moien! Wéi geet et dir? Ech si frou, merci.",
    "D'Lëtzebuerger Sprooch huet Wierder mat ë, é an ä: Äerd, Séi, Bësch, Ënn, Éislek.",
    " Ufank mat Espace an  duebelen   Espacen, um Enn ",
    "Zuelen: 1234567, 3.14159 an 2026-12-03; 42 Kilometer.",
    "Emoji 🇱🇺🙂👍🏽 an ✓, ｆｕｌｌ-ｗｉｄｔｈ, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 an 日本語のテキスト.",
    "Zeil eent\nZeil zwee\n\n\tmat Tab\r\nan CRLF",
    "Text mat <s>Spezial</s> an <start_of_turn>user\nMoien<end_of_turn> Tokens",
    "ëëë éé ää ÄÖÜ ß ç ñ ø å œ",
]


def spm_model(name, shared_tokenizers, out):
    """out/: a model folder for the tokenizer `name` of SPM (config of its family fixture at the real
    vocabulary size, zero weights: only the tokenizer matters), with its tokenizer files (spm_tokenizer)"""
    import numpy as np

    base, V = next((os.path.join(SRC, c), v) for n, c, v in SPM if n == name)
    with open(base) as f:
        cfg = json.load(f)
    cfg["vocab_size"] = V
    H, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or H // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    t = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
    if not cfg.get("tie_word_embeddings", cfg["model_type"].startswith("gemma")):
        t["lm_head.weight"] = (V, H)
    for l in range(L):
        p = f"model.layers.{l}."
        t.update({p + "self_attn.q_proj.weight": (q, H), p + "self_attn.k_proj.weight": (kv, H),
                  p + "self_attn.v_proj.weight": (kv, H), p + "self_attn.o_proj.weight": (H, q),
                  p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
                  p + "mlp.gate_proj.weight": (F, H), p + "mlp.up_proj.weight": (F, H),
                  p + "mlp.down_proj.weight": (H, F)})
        if cfg["model_type"].startswith("gemma"):
            t.update({p + "pre_feedforward_layernorm.weight": (H,), p + "post_feedforward_layernorm.weight": (H,)})
        if cfg["model_type"] == "gemma3_text":
            t.update({p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,)})
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    write_safetensors(os.path.join(out, "model.safetensors"),
                      {n: ("BF16", np.zeros(shape, dtype=np.uint16)) for n, shape in t.items()})
    spm_tokenizer(name, shared_tokenizers, out)


def gen_spm(luxtrain, shared):
    """spm_ids.json: the ids llama.cpp gives SPM_TEXTS (with BOS, special tokens parsed) from the
    GGUF `LUXTRAIN export --gguf` writes for each tokenizer of SPM"""
    from llama_cpp import Llama

    out = {"texts": SPM_TEXTS, "llama_cpp": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, _, _ in SPM:
            d = os.path.join(tmp, name)
            spm_model(name, os.path.join(shared, "tokenizers"), d)
            g = d + ".gguf"
            subprocess.run([luxtrain, "export", "--gguf", g, "--model", d, "--type", "bf16"], check=True)
            llm = Llama(model_path=g, vocab_only=True, verbose=False)
            out["llama_cpp"][name] = [llm.tokenize(t.encode(), add_bos=True, special=True) for t in SPM_TEXTS]
            del llm
    with open(os.path.join(OUT, "spm_ids.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote spm_ids.json")


def model_folder(tmp, name, mdir, tdir):
    """the model folder with the tokenizer files (the fixture models have none)"""
    if not tdir:
        return mdir
    d = os.path.join(tmp, name)
    os.makedirs(d)
    for f in os.listdir(mdir):
        if f.endswith(".safetensors") and not f.startswith("expected") or f in ("config.json",
                                                                                "model.safetensors.index.json"):
            os.symlink(os.path.join(mdir, f), os.path.join(d, f))
    for f in os.listdir(tdir):
        os.symlink(os.path.join(tdir, f), os.path.join(d, f))
    return d


def write_safetensors(path, tensors):
    import numpy as np

    header, blobs, off = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        b = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def gen_logits(luxtrain):
    import numpy as np
    from llama_cpp import Llama

    out = {"tokens": ("I32", np.array(TOKENS, dtype=np.int32))}
    with tempfile.TemporaryDirectory() as tmp:
        for name, mdir, tdir, adir in models():
            d = model_folder(tmp, name, mdir, tdir)
            for t in TYPES:
                g = os.path.join(tmp, f"{name}.{t}.gguf")
                subprocess.run([luxtrain, "export", "--gguf", g, "--model", d, "--type", t] +
                               (["--adapter", adir] if adir else []), check=True)
                # KV cache in f32 (type 0): the logits then differ from luxtrain's by the weights' type
                # and ggml's matmul inputs only (ggml's CPU matmul rounds the activations to the
                # weights' vec_dot type: f16, bf16 or q8_0 blocks)
                llm = Llama(model_path=g, n_ctx=64, n_batch=64, logits_all=True, n_threads=1, verbose=False,
                            seed=0, type_k=0, type_v=0, flash_attn=False)
                llm.eval(TOKENS)
                logits = np.array(llm.scores[: len(TOKENS)], dtype=np.float32)
                out[f"{name}.{t}"] = ("F32", logits)
                print(name, t, logits.shape, float(np.abs(logits).max()))
                del llm
    write_safetensors(os.path.join(OUT, "llama_cpp_logits.safetensors"), out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["tokenizers"]:
        gen_tokenizers()
        gen_olmo2()
        gen_gemma()
        gen_phi3()
        gen_adapters()
    elif sys.argv[1:2] == ["logits"] and len(sys.argv) == 3:
        gen_logits(os.path.abspath(sys.argv[2]))
    elif sys.argv[1:2] == ["spm"] and len(sys.argv) == 4:
        gen_spm(os.path.abspath(sys.argv[2]), sys.argv[3])
    elif sys.argv[1:2] == ["spm-model"] and len(sys.argv) == 5:
        spm_model(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
