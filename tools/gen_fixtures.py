#!/usr/bin/env python3
"""gen_fixtures.py -- tiny random Hugging Face models and the outputs
transformers computes for them: the reference for tests/test_model_fixtures.c,
tests/test_packing.c and tests/test_cli_model.sh.

For every model in MODELS this writes tests/fixtures/models/<name>/:
  config.json, model.safetensors (or shards + model.safetensors.index.json)
      exactly as save_pretrained writes them (F32, BF16 or F16 weights);
  expected.safetensors  (F32 / I32 tensors)
      tokens, mask, targets, pos, doc_start    (B, T)  the packed batch
      doc_lens (B, MAXDOC), n_docs (B)                 its document layout
      logits (B*T, V)       every position (a padding token is its own
                            one-token document, so it has logits too)
      losses (B*T)          -log p(target) at each position, 0 where no target
      grad.<hf name>        d(loss)/d(param) for every parameter, where
                            loss = sum(losses) / n_targets of the whole batch
      score_ids (S), score_logprobs (S-1), score_logits (S, V)
                            for `luxtrain score`
  expected.json  the scalar loss, n_targets and the batch layout.

The reference never packs: each document is run alone through the model
(positions from 0), cross-entropy of logits[:-1] against ids[1:] where the
next token is a target, summed over the batch and divided by the batch's
target count, then backward. Low-precision checkpoints are loaded back and
converted to float32 for the reference, so the comparison stays fp32-exact.

Every model is made with transformers 5 and torch, pinned in
tools/requirements-gen.txt; run tools/gen_fixtures.sh (it makes the venv and
runs this, then `tools/gen_config_fixture.py v5-configs`), or by hand:
    python tools/gen_fixtures.py [--out DIR] [NAME ...]   # no names: every model
Each fixture's config.json is written in the transformers 4 form (rope_theta
and rope_scaling, torch_dtype, no layer_types: what transformers 4 writes for
the same model) and tests/fixtures/config/v5/<name>/config.json holds the
transformers 5 form of the same config, so every family is checked with both.
"""
import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import (AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "models")

B, T = 2, 20
# document lengths per sequence; sequence 1 ends with T - 14 = 6 padding tokens
DOCS = [[7, 1, 12], [9, 5]]
MAXDOC = 3

MODELS = [
    # name, config class, config kwargs, save dtype, max_shard_size; the families first made with
    # transformers 4 (their index is their seed: the weights are those of the first fixtures)
    ("llama", LlamaConfig, dict(
        vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        # small original context so all three llama3 regimes occur for head_dim 16
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    ), torch.float32, None),
    ("llama_tied", LlamaConfig, dict(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
    ), torch.bfloat16, None),
    ("mistral", MistralConfig, dict(
        vocab_size=144, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, sliding_window=64,
        tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2,
    ), torch.float32, None),
    ("qwen2", Qwen2Config, dict(
        vocab_size=136, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=False,
        use_sliding_window=False, sliding_window=4096, max_window_layers=2,
        bos_token_id=1, eos_token_id=2,
    ), torch.float16, None),
    ("qwen3", Qwen3Config, dict(
        vocab_size=152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True,
        use_sliding_window=False, sliding_window=None, max_window_layers=2,
        bos_token_id=1, eos_token_id=2,
    ), torch.float32, "30KB"),
]

# the families added since (the seed index is len(MODELS) + position, or SEED_INDEX5); name, config class
# name, kwargs, save dtype, shard
MODELS5 = [
    # post-norm, q/k norm over the whole projection; GQA and head_dim 16 != 48 / 4, so the q_norm
    # weight (64) is wider than hidden_size
    ("olmo2", "Olmo2Config", dict(
        vocab_size=168, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        attention_bias=False, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    ), torch.float32, None),
    # Mistral NeMo's shape: model_type mistral with an explicit head_dim (16) != hidden / heads (48 / 4 = 12),
    # so q_proj is (64, 48) and o_proj (48, 64); GQA; no sliding window (NeMo's config has null)
    ("mistral_nemo", "MistralConfig", dict(
        vocab_size=176, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        sliding_window=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    ), torch.float32, None),
    # Gemma 2 with every setting binding: 3 layers (sliding, full, sliding) with a window of 5 < the
    # documents (7, 12, 9, 5); head_dim 16 != 48 / 4 and query_pre_attn_scalar 24 != head_dim; GQA;
    # attention scores capped at 4 and final logits at 3 (both change the logits: see GEMMA_CAPS);
    # tied embeddings; embeddings * sqrt(48)
    ("gemma2", "Gemma2Config", dict(
        vocab_size=160, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        query_pre_attn_scalar=24, sliding_window=5, attn_logit_softcapping=4.0, final_logit_softcapping=3.0,
        hidden_activation="gelu_pytorch_tanh", attention_bias=False, tie_word_embeddings=True,
        bos_token_id=2, eos_token_id=1, pad_token_id=0,
    ), torch.float32, None),
    # Gemma 3 text: Gemma 2's layer with per-head (1 + w) q/k norms, 6 layers = 5 local : 1 global
    # (the default pattern), window 5; two rotary tables: local theta 1000, global theta 1e5 with
    # linear scaling 4; no soft-caps (Gemma3TextConfig's default)
    ("gemma3", "Gemma3TextConfig", dict(
        vocab_size=160, hidden_size=48, intermediate_size=80, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        rms_norm_eps=1e-6, query_pre_attn_scalar=24, sliding_window=5,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1000.0}},
        hidden_activation="gelu_pytorch_tanh", attention_bias=False, tie_word_embeddings=True,
        bos_token_id=2, eos_token_id=1, pad_token_id=0,
    ), torch.float32, None),
    # Phi-4-mini's shape: fused qkv_proj / gate_up_proj, partial rotary 0.75 (12 of head_dim 16 rotated),
    # GQA, tied embeddings, LongRoPE with original_max_position_embeddings 4: every document of more than
    # one token is past it (the long factors; a one-token document sits at position 0, where both tables
    # agree); rope factor 2 given, so the attention factor is sqrt(1 + ln 2 / ln 4) = 1.22 (Phi-4-mini:
    # 1.19; from 64 / 4 it would be 1.73, too sharp for the bf16 checks of test_model_cuda)
    ("phi3", "Phi3Config", dict(
        vocab_size=184, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        original_max_position_embeddings=4, partial_rotary_factor=0.75, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                         "factor": 2.0, "short_factor": [1.0, 1.07, 1.21, 1.5, 2.2, 3.1],
                         "long_factor": [1.3, 2.1, 3.9, 6.5, 11.0, 17.5]},
        sliding_window=None, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    ), torch.float32, None),
    # the same layer below its original length: original_max_position_embeddings 16 >= every document
    # (the short factors); partial rotary 0.5, MHA-to-GQA 8 / 2 heads of 8, untied head
    ("phi3_short", "Phi3Config", dict(
        vocab_size=168, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=48,
        original_max_position_embeddings=16, partial_rotary_factor=0.5, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                         "short_factor": [1.02, 1.6], "long_factor": [2.5, 9.0]},
        sliding_window=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    ), torch.float32, None),
    # EuroLLM-9B's shape scaled down: LlamaForCausalLM with its settings (its model card: GQA with 8 key/value
    # heads, pre-norm RMSNorm, SwiGLU, RoPE; its config.json, not readable here, as recalled: 42 layers, hidden
    # 4096, FFN 12288 = 3 x hidden, 32 heads, head_dim 128 = 4096 / 32, rope_theta 10000 without scaling,
    # length 4096, RMSNorm eps 1e-5, untied lm_head, bf16 weights): GQA 4 : 1 (4 heads, 1 key/value head), FFN
    # 3 x hidden, head_dim = hidden / heads given explicitly, default RoPE theta 1e4, bf16.
    # Its 128000-token SentencePiece-style BPE vocabulary is scaled down to 192 like the others'.
    ("eurollm", "LlamaConfig", dict(
        vocab_size=192, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=4096,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        attention_bias=False, mlp_bias=False, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    ), torch.bfloat16, None),
]

# phi3 / phi3_short and gemma2 / gemma3 were added on parallel branches at the same MODELS5 index;
# the index each phi3 fixture was made with (its seed), so the committed fixtures stay reproducible.
# Entries added since name their index here (unused ones), so no seed depends on the list's order.
SEED_INDEX5 = {"phi3": 2, "phi3_short": 3, "eurollm": 20}

# the models whose explicit head_dim must differ from hidden / heads (Mistral NeMo: 128 != 5120 / 32)
HEAD_DIM_EXPLICIT = ("mistral_nemo",)
# the settings whose effect a fixture must show (the logits change by more than 1% without them)
GEMMA_CAPS = {"gemma2": ("attn_logit_softcapping", "final_logit_softcapping", "sliding_window"),
              "gemma3": ("sliding_window",)}


def randomize(model, seed):
    """Replace transformers' init (tiny weights, zero biases, unit norms) with
    values that make every parameter matter: O(1) activations and logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                # gemma2's norms multiply by (1 + w): the same scale around 1
                one = 0.0 if model.config.model_type.startswith("gemma") else 1.0
                p.copy_(one + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                # a tied table is also the head: keep its logits O(1)
                std = 2.0 / math.sqrt(p.shape[1]) if model.config.tie_word_embeddings else 1.0
                p.copy_(torch.randn(p.shape, generator=g) * std)
            else:  # (out, in) projections and lm_head
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / math.sqrt(p.shape[1])))


def make_batch(vocab, seed):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, vocab, size=(B, T)).astype(np.int32)
    mask = (rng.random((B, T)) < 0.75).astype(np.int32)
    doc_lens = np.zeros((B, MAXDOC), np.int32)
    n_docs = np.zeros(B, np.int32)
    targets = np.full((B, T), -1, np.int32)
    pos = np.zeros((B, T), np.int32)
    doc_start = np.zeros((B, T), np.int32)
    docs = []  # (b, start, len) including padding as one-token documents
    for b in range(B):
        n_docs[b] = len(DOCS[b])
        doc_lens[b, :len(DOCS[b])] = DOCS[b]
        s = 0
        for L in DOCS[b]:
            docs.append((b, s, L, False))
            s += L
        for t in range(s, T):
            mask[b, t] = 0
            docs.append((b, t, 1, True))
    for (b, s, L, _) in docs:
        for j in range(L):
            pos[b, s + j] = j
            doc_start[b, s + j] = s
            if j + 1 < L and mask[b, s + j + 1]:
                targets[b, s + j] = tokens[b, s + j + 1]
    return tokens, mask, targets, pos, doc_start, doc_lens, n_docs, docs


def build(out, name, cls, kw, save_dtype, shard, seed):
    torch.manual_seed(seed)
    cfg = cls(**kw, attn_implementation="eager", dtype="float32")
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    randomize(model, seed + 1)
    d = os.path.join(out, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    model = model.to(save_dtype)
    model.config.dtype = save_dtype
    kwargs = {"safe_serialization": True}
    if shard:
        kwargs["max_shard_size"] = shard
    model.save_pretrained(d, **kwargs)
    for extra in ("generation_config.json",):
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)
    # the reference runs on the weights as saved, in float32
    ref = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32)
    v4_config(os.path.join(d, "config.json"), kw)
    ref.train()  # dropout is 0 in these configs; train() only enables grads semantics
    ref.config.use_cache = False
    return d, ref


def v4_config(path, kw):
    """Rewrite a config.json saved by transformers 5 in the form transformers 4
    writes: rope_theta (+ rope_scaling) for rope_parameters, torch_dtype for
    dtype. Default RoPE, llama3 scaling, Gemma 3's two tables and Phi-3's LongRoPE are rewritten (LongRoPE as
    Phi-3 checkpoints write it: rope_scaling {type, short_factor, long_factor}, the
    original length and partial_rotary_factor at the top level); anything else
    stops here. Qwen2/3's layer_types (all full attention: use_sliding_window false)
    is dropped, as transformers 4 has none, and their sliding_window is the value given (kw), which
    transformers 4 keeps while use_sliding_window is false (5 writes null); Llama and Qwen2/3 write
    rope_scaling null without scaling; a null pad_token_id is left out. transformers 4 does each."""
    with open(path) as f:
        c = json.load(f)
    if c.get("pad_token_id", 0) is None:
        del c["pad_token_id"]
    if c["model_type"] in ("qwen2", "qwen3"):
        lt = c.pop("layer_types")
        if c.get("use_sliding_window") or any(t != "full_attention" for t in lt):
            sys.exit(f"{path}: v4_config handles Qwen without sliding windows only, found {lt}")
        c["sliding_window"] = kw.get("sliding_window")
    rp = c.pop("rope_parameters")
    if c["model_type"] == "gemma3_text":
        # transformers 4's Gemma 3: rope_theta + rope_scaling for the global layers,
        # rope_local_base_freq for the local ones, sliding_window_pattern instead of layer_types
        full, local = dict(rp["full_attention"]), rp["sliding_attention"]
        if local != {"rope_type": "default", "rope_theta": local["rope_theta"]}:
            sys.exit(f"{path}: v4_config: the local table must be default RoPE, found {local}")
        c["rope_theta"] = full.pop("rope_theta")
        c["rope_scaling"] = full if full.get("rope_type") != "default" else None
        c["rope_local_base_freq"] = local["rope_theta"]
        lt = c.pop("layer_types")
        if lt != ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(len(lt))]:
            sys.exit(f"{path}: layer_types {lt} is not transformers 4's 5:1 pattern")
        c["sliding_window_pattern"] = 6
        c["hidden_act"] = c["hidden_activation"]
        c["cache_implementation"] = "hybrid"
        c.pop("use_bidirectional_attention", None)
        c["torch_dtype"] = c.pop("dtype")
        with open(path, "w") as f:
            json.dump(dict(sorted(c.items())), f, indent=2)
            f.write("\n")
        return
    llama3 = None
    if rp.get("rope_type") == "llama3" and set(rp) == {"rope_type", "rope_theta", "factor", "low_freq_factor",
                                                        "high_freq_factor", "original_max_position_embeddings"}:
        # transformers 4 keeps llama3's original length inside rope_scaling
        llama3 = dict(sorted((k, v) for k, v in rp.items() if k != "rope_theta"))
        rp = {"rope_type": "llama3", "rope_theta": rp["rope_theta"]}
    top = {"partial_rotary_factor": c.get("partial_rotary_factor", 1.0),
           "original_max_position_embeddings": c.get("original_max_position_embeddings")}
    for k in ("partial_rotary_factor", "original_max_position_embeddings"):  # at the top level in v4
        if k in rp and rp.pop(k) != top[k]:
            sys.exit(f"{path}: rope_parameters.{k} differs from the top-level value")
    if rp.get("rope_type") == "longrope" and set(rp) <= {"rope_type", "type", "rope_theta", "short_factor",
                                                           "long_factor", "factor"}:
        c["rope_scaling"] = {"type": "longrope", **{k: rp[k] for k in ("short_factor", "long_factor", "factor")
                                                    if k in rp}}
    elif llama3:
        c["rope_scaling"] = llama3
    elif rp.get("rope_type") != "default" or set(rp) != {"rope_type", "rope_theta"}:
        sys.exit(f"{path}: v4_config handles default, llama3 and longrope RoPE only, found {rp}")
    c["rope_theta"] = rp["rope_theta"]
    if c["model_type"] in ("llama", "qwen2", "qwen3"):
        c.setdefault("rope_scaling", None)
    c["torch_dtype"] = c.pop("dtype")
    if c["model_type"] == "gemma2":
        # transformers 4's Gemma 2 has no layer_types (layers 0, 2, ... slide) and its checkpoints
        # also carry hidden_act and cache_implementation
        lt = c.pop("layer_types")
        if lt != ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(len(lt))]:
            sys.exit(f"{path}: layer_types {lt} is not transformers 4's alternation")
        c["hidden_act"] = c["hidden_activation"]
        c["cache_implementation"] = "hybrid"
        c.pop("use_bidirectional_attention", None)
    with open(path, "w") as f:
        json.dump(dict(sorted(c.items())), f, indent=2)
        f.write("\n")


def reference(model, vocab, seed):
    tokens, mask, targets, pos, doc_start, doc_lens, n_docs, docs = make_batch(vocab, seed)
    V = vocab
    logits = np.zeros((B, T, V), np.float32)
    losses = np.zeros((B, T), np.float32)
    n_targets = 0
    for (b, s, L, pad) in docs:
        for j in range(1, L):
            if mask[b, s + j]:
                n_targets += 1
    model.zero_grad(set_to_none=True)
    total = 0.0
    for (b, s, L, pad) in docs:
        ids = torch.tensor(tokens[b, s:s + L], dtype=torch.long)[None]
        labels = ids.clone()
        for j in range(L):
            if j == 0 or not mask[b, s + j]:
                labels[0, j] = -100
        out = model(input_ids=ids, use_cache=False)
        lg = out.logits[0].float()  # (L, V)
        logits[b, s:s + L] = lg.detach().numpy()
        # HF causal-LM convention: position j predicts labels[j + 1]
        tok_loss = torch.nn.functional.cross_entropy(lg[:-1], labels[0, 1:], ignore_index=-100, reduction="none")
        if L > 1:
            losses[b, s:s + L - 1] = tok_loss.detach().numpy()
        doc_sum = tok_loss.sum()
        (doc_sum / n_targets).backward()
        total += doc_sum.item()
    grads = {}
    for pname, p in model.named_parameters():
        grads["grad." + pname] = p.grad.detach().float().numpy().copy()
    batch = dict(tokens=tokens, mask=mask, targets=targets, pos=pos, doc_start=doc_start, doc_lens=doc_lens,
                 n_docs=n_docs)
    return batch, logits.reshape(B * T, V), losses.reshape(B * T), total / n_targets, n_targets, grads


def check_binding(model, vocab, seed, keys):
    """Each of GEMMA_CAPS[name] (keys) changes the fixture's logits by more than 1% (relative
    norm) when turned off, so a runtime that ignores one fails the comparison."""
    ids = torch.tensor(make_batch(vocab, seed)[0][0, :12], dtype=torch.long)[None]
    with torch.no_grad():
        base = model(input_ids=ids, use_cache=False).logits
        for key in keys:
            old = getattr(model.config, key)
            setattr(model.config, key, None if key != "sliding_window" else 1000)
            for layer in model.model.layers:  # the attention modules copy these at init
                a = layer.self_attn
                a.attn_logit_softcapping = model.config.attn_logit_softcapping
                if a.sliding_window is not None:
                    a.sliding_window = model.config.sliding_window
            other = model(input_ids=ids, use_cache=False).logits
            setattr(model.config, key, old)
            for layer in model.model.layers:
                a = layer.self_attn
                a.attn_logit_softcapping = model.config.attn_logit_softcapping
                if a.sliding_window is not None:
                    a.sliding_window = model.config.sliding_window
            rel = float((other - base).norm() / base.norm())
            print(f"  without {key}: logits change by {100 * rel:.1f}%")
            if rel < 0.01:
                sys.exit(f"{key} does not bind in the fixture (logits change {rel:.2e})")


def check_head_dim(model):
    """the model's head_dim differs from hidden / heads, and q_proj / o_proj have its shapes"""
    c = model.config
    q = model.model.layers[0].self_attn.q_proj.weight
    if c.head_dim == c.hidden_size // c.num_attention_heads or tuple(q.shape) != (
            c.num_attention_heads * c.head_dim, c.hidden_size):
        sys.exit(f"head_dim {c.head_dim} does not bind (hidden {c.hidden_size}, {c.num_attention_heads} heads, "
                 f"q_proj {tuple(q.shape)})")
    print(f"  head_dim {c.head_dim} != hidden / heads = {c.hidden_size // c.num_attention_heads}: "
          f"q_proj {tuple(q.shape)}")


def score_reference(model, vocab, seed):
    rng = np.random.default_rng(seed + 7)
    ids = rng.integers(0, vocab, size=9).astype(np.int32)
    with torch.no_grad():
        lg = model(input_ids=torch.tensor(ids, dtype=torch.long)[None], use_cache=False).logits[0].float()
        lp = torch.log_softmax(lg, dim=-1)
        out = lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:], dtype=torch.long)]
    return ids, out.numpy().astype(np.float32), lg.numpy().astype(np.float32)


def all_models():
    """(seed index, (name, config class, kwargs, save dtype, shard)) of every fixture model"""
    out = list(enumerate(MODELS))
    out += [(len(MODELS) + SEED_INDEX5.get(m[0], i), (m[0], getattr(transformers, m[1])) + m[2:])
            for i, m in enumerate(MODELS5)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="models to make (default: all)")
    ap.add_argument("--out", default=OUT, help="output folder (default: tests/fixtures/models)")
    ap.add_argument("--list", action="store_true", help="print the model names and stop")
    args = ap.parse_args()
    if int(transformers.__version__.split(".")[0]) < 5:
        sys.exit("the fixtures are made with transformers 5 (tools/requirements-gen.txt), found "
                 + transformers.__version__)
    todo = all_models()
    if args.list:
        print(" ".join(m[1][0] for m in todo))
        return 0
    known = {m[1][0] for m in todo}
    for n in args.names:
        if n not in known:
            sys.exit(f"unknown model {n!r} (models: {sorted(known)})")
    if args.names:
        todo = [m for m in todo if m[1][0] in args.names]
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    for k, (name, cls, kw, dt, shard) in todo:
        seed = 1234 + 17 * k
        d, model = build(args.out, name, cls, kw, dt, shard, seed)
        if name in GEMMA_CAPS:
            check_binding(model, kw["vocab_size"], seed, GEMMA_CAPS[name])
        if name in HEAD_DIM_EXPLICIT:
            check_head_dim(model)
        V = kw["vocab_size"]
        batch, logits, losses, loss, n_targets, grads = reference(model, V, seed)
        sids, slp, slg = score_reference(model, V, seed)
        tensors = {k2: np.ascontiguousarray(v) for k2, v in batch.items()}
        tensors.update(logits=logits, losses=losses, score_ids=sids, score_logprobs=slp, score_logits=slg)
        tensors.update(grads)
        save_file({k2: np.ascontiguousarray(v) for k2, v in tensors.items()}, os.path.join(d, "expected.safetensors"),
                  metadata={"generator": "tools/gen_fixtures.py", "torch": torch.__version__,
                            "transformers": transformers.__version__})
        info = {
            "model": name, "architecture": model.config.architectures[0], "saved_dtype": str(dt).split(".")[-1],
            "B": B, "T": T, "docs": DOCS, "n_targets": int(n_targets), "loss": float(loss),
            "num_parameters": int(sum(p.numel() for p in model.parameters())),
            "score_ids": [int(x) for x in sids], "score_logprob_sum": float(slp.astype(np.float64).sum()),
        }
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(info, f, indent=1)
            f.write("\n")
        print(f"{name}: loss {loss:.6f} over {n_targets} targets, {info['num_parameters']} params, "
              f"{len(grads)} grads -> {d}")


if __name__ == "__main__":
    sys.exit(main())
