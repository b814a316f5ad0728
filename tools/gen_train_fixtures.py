#!/usr/bin/env python3
"""gen_train_fixtures.py -- what PyTorch + transformers + PEFT compute for a
few training steps on the tiny fixture models (tests/fixtures/models/*, made by
tools/gen_fixtures.py): the reference for tests/test_train_torch.c.

For every model NAME this writes tests/fixtures/train/NAME/:
  batches.safetensors   I32 (STEPS, MICRO, B, T): tokens, targets, pos,
                        doc_start -- packed micro-batches (documents of random
                        length and loss mask, next-fit into sequences, padding
                        as one-token documents of id 0)
  full.safetensors      F32 "<hf name>": every parameter after STEPS AdamW
                        steps of full fine-tuning
  adapter/              a PEFT LoRA adapter (r 4, alpha 8, all seven
                        projections; phi3: its four, qkv_proj and
                        gate_up_proj fused) with PEFT's A and a random B, as
                        save_pretrained writes it: the starting point
  lora.safetensors      F32 "logits0" (B*T, V): the PEFT model's logits for
                        micro-batch (0, 0) before training; "<peft name>":
                        the adapter after STEPS AdamW steps (base frozen)
  expected.json         hyper-parameters, and per step the loss (mean
                        cross-entropy over the step's target tokens) and the
                        gradient norm before clipping, for both modes

Each step: the loss over all micro-batches of the step divided by the step's
target count (documents run one at a time, positions from 0: no packing on
this side), backward, torch.nn.utils.clip_grad_norm_, torch.optim.AdamW
(weight decay on matrices except embed_tokens, as lt_optim_decay_default),
LambdaLR with lt_optim's schedule formula (warmup + cosine to min_lr_ratio).
Weights are the checkpoints converted to float32 (as luxtrain's CPU backend
loads them).

Run with the generator venv (tools/requirements-gen.txt; tools/gen_fixtures.sh makes it and runs this):
    python tools/gen_train_fixtures.py [--out DIR] [NAME ...]   # no names: every model
"""
import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "train")
NAMES = ["llama", "llama_tied", "mistral", "qwen2", "qwen3"]
# the fixtures added since (the seed index is len(NAMES) + position, or SEED_INDEX5)
NAMES5 = ["olmo2", "mistral_nemo", "gemma2", "gemma3", "phi3", "phi3_short", "eurollm"]
# phi3 / phi3_short and gemma2 / gemma3 were added on parallel branches at the same NAMES5 index; the
# index each phi3 fixture was made with (its seed), so the committed fixtures stay reproducible.
# Entries added since name their index here (unused ones), so no seed depends on the list's order.
SEED_INDEX5 = {"phi3": 2, "phi3_short": 3, "eurollm": 20}

STEPS, MICRO, B, T = 4, 2, 2, 16
HP = dict(warmup_steps=2, total_steps=STEPS, min_lr_ratio=0.1, beta1=0.9, beta2=0.95, eps=1e-8,
          weight_decay=0.1, clip=1.0, lr_full=1e-3, lr_lora=5e-3, lora_r=4, lora_alpha=8.0)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Phi-3's fused modules, as PEFT names them
TARGETS_FUSED = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
# shortest document per model (default 2). phi3's LongRoPE switches to its long factors past 4 positions:
# luxtrain (as transformers given the packed position_ids) picks the table by the micro-batch's largest
# position, this reference by each document's; with every document longer than 4 both pick the long one
# (a one-token padding document sits at position 0, where the tables agree)
MIN_DOC = {"phi3": 5}


def lr_factor(step):
    """lt_optim's cosine schedule (docs/training.md)."""
    W, N, r = HP["warmup_steps"], HP["total_steps"], HP["min_lr_ratio"]
    if step < W:
        return step / W
    p = min(max((step - W) / max(1, N - W), 0.0), 1.0)
    return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * p))


def make_batches(vocab, seed, min_doc=2):
    rng = np.random.default_rng(seed)
    shape = (STEPS, MICRO, B, T)
    arr = {k: np.zeros(shape, np.int32) for k in ("tokens", "targets", "pos", "doc_start")}
    docs = []  # per step: list of (s, m, b, start, ids, mask) documents (no padding)
    for s in range(STEPS):
        step_docs = []
        for m in range(MICRO):
            for b in range(B):
                t = 0
                while True:
                    L = int(rng.integers(min_doc, 12))
                    if t + L > T:
                        break
                    ids = rng.integers(3, vocab, size=L).astype(np.int32)
                    mask = (rng.random(L) < 0.8).astype(np.int32)
                    mask[0] = 0
                    step_docs.append((m, b, t, ids, mask))
                    for j in range(L):
                        arr["tokens"][s, m, b, t + j] = ids[j]
                        arr["pos"][s, m, b, t + j] = j
                        arr["doc_start"][s, m, b, t + j] = t
                        arr["targets"][s, m, b, t + j] = ids[j + 1] if j + 1 < L and mask[j + 1] else -1
                    t += L
                for u in range(t, T):  # padding: one-token documents of id 0, never targets
                    arr["tokens"][s, m, b, u] = 0
                    arr["pos"][s, m, b, u] = 0
                    arr["doc_start"][s, m, b, u] = u
                    arr["targets"][s, m, b, u] = -1
        docs.append(step_docs)
    return arr, docs


def step_loss(model, step_docs):
    """sum over the step's documents of the summed CE, / the step's targets; backward."""
    n_tgt = int(sum(int(mask[1:].sum()) for (_, _, _, _, mask) in step_docs))
    total = 0.0
    for (_, _, _, ids, mask) in step_docs:
        x = torch.tensor(ids, dtype=torch.long)[None]
        lg = model(input_ids=x, use_cache=False).logits[0].float()
        labels = torch.tensor(np.where(mask[1:] > 0, ids[1:], -100), dtype=torch.long)
        doc = torch.nn.functional.cross_entropy(lg[:-1], labels, ignore_index=-100, reduction="sum")
        (doc / n_tgt).backward()
        total += doc.item()
    return total / n_tgt


def train(model, params_named, lr, arr_docs):
    decay = [p for n, p in params_named if p.ndim >= 2 and not n.endswith("embed_tokens.weight")]
    no_decay = [p for n, p in params_named if not (p.ndim >= 2 and not n.endswith("embed_tokens.weight"))]
    groups = [{"params": decay, "weight_decay": HP["weight_decay"]}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=lr, betas=(HP["beta1"], HP["beta2"]), eps=HP["eps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    losses, norms, lrs = [], [], []
    for s in range(STEPS):
        opt.zero_grad(set_to_none=True)
        losses.append(step_loss(model, arr_docs[s]))
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in params_named], HP["clip"])
        norms.append(float(norm))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return losses, norms, lrs


def load(d):
    m = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32)
    m.config.use_cache = False
    m.train()
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="models to run (default: all)")
    ap.add_argument("--out", default=OUT, help="output folder (default: tests/fixtures/train)")
    ap.add_argument("--list", action="store_true", help="print the model names and stop")
    args = ap.parse_args()
    if int(transformers.__version__.split(".")[0]) < 5:
        sys.exit("the fixtures are made with transformers 5 (tools/requirements-gen.txt), found "
                 + transformers.__version__)
    todo = list(enumerate(NAMES)) + [(len(NAMES) + SEED_INDEX5.get(n, i), n) for i, n in enumerate(NAMES5)]
    if args.list:
        print(" ".join(n for _, n in todo))
        return
    for n in args.names:
        if n not in NAMES + NAMES5:
            sys.exit(f"unknown model {n!r} (models: {NAMES + NAMES5})")
    if args.names:
        todo = [(k, n) for k, n in todo if n in args.names]
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    for k, name in todo:
        src = os.path.join(MODELS, name)
        out = os.path.join(args.out, name)
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.makedirs(out)
        model = load(src)
        V = model.config.vocab_size
        arr, docs = make_batches(V, 1000 + k, MIN_DOC.get(name, 2))
        save_file({k2: v for k2, v in arr.items()}, os.path.join(out, "batches.safetensors"))
        exp = {"steps": STEPS, "micro": MICRO, "B": B, "T": T, **HP,
               "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                            "peft": peft.__version__}}

        # ---- full fine-tuning
        torch.manual_seed(0)
        named = list(model.named_parameters())
        losses, norms, lrs = train(model, named, HP["lr_full"], docs)
        exp["full"] = {"loss": losses, "grad_norm": norms, "lr": lrs}
        save_file({n: p.detach().float().numpy().copy() for n, p in model.named_parameters()},
                  os.path.join(out, "full.safetensors"), metadata={"format": "pt"})

        # ---- LoRA: PEFT's init for A, a random B (so both get gradients at step 1)
        base = load(src)
        torch.manual_seed(100 + k)
        targets = TARGETS_FUSED if base.config.model_type == "phi3" else TARGETS
        cfg = LoraConfig(r=HP["lora_r"], lora_alpha=HP["lora_alpha"], lora_dropout=0.0, target_modules=targets,
                         task_type="CAUSAL_LM", bias="none")
        pm = get_peft_model(base, cfg)
        g = torch.Generator().manual_seed(200 + k)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        pm.save_pretrained(os.path.join(out, "adapter"))
        os.remove(os.path.join(out, "adapter", "README.md"))  # PEFT's model card: not needed
        # logits of micro-batch (0, 0), every position (padding: its own one-token document)
        lg0 = np.zeros((B, T, V), np.float32)
        with torch.no_grad():
            for b in range(B):
                t = 0
                while t < T:
                    s0 = int(arr["doc_start"][0, 0, b, t])
                    e = t + 1
                    while e < T and arr["doc_start"][0, 0, b, e] == s0 and arr["pos"][0, 0, b, e] == e - s0:
                        e += 1
                    x = torch.tensor(arr["tokens"][0, 0, b, t:e], dtype=torch.long)[None]
                    lg0[b, t:e] = pm(input_ids=x, use_cache=False).logits[0].float().numpy()
                    t = e
        named = [(n, p) for n, p in pm.named_parameters() if p.requires_grad]
        losses, norms, lrs = train(pm, named, HP["lr_lora"], docs)
        exp["lora"] = {"loss": losses, "grad_norm": norms, "lr": lrs}
        tensors = {"logits0": lg0.reshape(B * T, V)}
        for n, p in pm.named_parameters():
            if p.requires_grad:  # base_model.model.model.layers.L.self_attn.q_proj.lora_A.default.weight
                tensors[n.replace(".default.weight", ".weight")] = p.detach().float().numpy().copy()
        save_file(tensors, os.path.join(out, "lora.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(out, "expected.json"), "w") as f:
            json.dump(exp, f, indent=1)
        print(name, "full", ["%.6f" % x for x in exp["full"]["loss"]], "lora",
              ["%.6f" % x for x in exp["lora"]["loss"]])


if __name__ == "__main__":
    main()
