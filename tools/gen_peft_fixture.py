#!/usr/bin/env python3
"""gen_peft_fixture.py -- the reference for tests/test_export.c: a LoRA adapter
folder exactly as PEFT's save_pretrained writes it, the tiny base model it
belongs to, and PEFT's own LoRA initialization statistics.

Writes under tests/fixtures/peft/:
  base/      a tiny LlamaForCausalLM (hidden 32, 2 layers, 4 heads / 2 kv heads,
             intermediate 48, vocab 64), save_pretrained (F32 safetensors)
  adapter/   LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05,
             target_modules=[q_proj, v_proj, down_proj]) with every lora_A and
             lora_B set to random nonzero values, save_pretrained
             (adapter_config.json + adapter_model.safetensors)
  expected.safetensors
             ids (1, 10) I32, logits_base (10, 64) and logits_lora (10, 64)
             F32: the base model's and the adapted model's logits for ids
             (eval mode, so no dropout), for later runtime tests;
             init_A (16, 1024) F32: a lora_A exactly as PEFT initialized it
             for a Linear(1024, 64) with r=16 (B is zero)
  expected.json
             PEFT's init statistics: for the fresh (not randomized) tiny model
             every lora_A's in_features, max |A|, std; for the probe layer the
             same; the Kaiming-uniform bound 1/sqrt(in_features) they imply;
             whether every lora_B was zero; the scaling PEFT uses.

Run: tools/gen_fixtures.sh run tools/gen_peft_fixture.py (versions pinned in
tools/requirements-gen.txt). Not run by CI: the fixture is committed.

The committed fixture was made with PEFT 0.15.2 (torch 2.5.1, transformers 4.51.3)
and is kept: it is the record of the adapter_config.json PEFT 0.15.2 writes, which
train/lt_export.c writes key for key and tests/test_export.c compares exactly
(29 keys). Made with PEFT 0.21.2 it has 12 more keys (all off), so the exact
comparison would fail until the exporter writes PEFT 0.21's form; the numbers
(logits, init statistics) agree within 4e-7.
"""
import json
import math
import os
import shutil

import numpy as np
import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors.numpy import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "peft")


def lora_stats(model):
    st = []
    for name, mod in model.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            A = mod.lora_A["default"].weight.detach()
            B = mod.lora_B["default"].weight.detach()
            st.append({"module": name, "in_features": A.shape[1], "r": A.shape[0],
                       "max_abs_A": float(A.abs().max()), "std_A": float(A.std()),
                       "bound": 1.0 / math.sqrt(A.shape[1]), "B_all_zero": bool((B == 0).all()),
                       "scaling": mod.scaling["default"]})
    return st


def main():
    torch.manual_seed(20250)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    base = LlamaForCausalLM(cfg).eval()
    base.save_pretrained(os.path.join(OUT, "base"))
    # reload through the folder so the adapter records a relative base path
    os.chdir(OUT)
    base = LlamaForCausalLM.from_pretrained("base", dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 33, 2, 17, 63, 40, 8, 11]])
    with torch.no_grad():
        logits_base = base(ids).logits[0].numpy().copy()

    lcfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=["q_proj", "v_proj", "down_proj"],
                      task_type="CAUSAL_LM", bias="none")
    model = get_peft_model(base, lcfg)
    init_stats = lora_stats(model)
    # randomize A and B so every value is checked
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    model.save_pretrained("adapter")
    model.eval()
    with torch.no_grad():
        logits_lora = model(ids).logits[0].numpy().copy()

    # a larger probe for the init distribution: Linear(1024, 64), r = 16
    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1024, 64)

        def forward(self, x):
            return self.lin(x)

    probe = get_peft_model(Probe(), LoraConfig(r=16, lora_alpha=16, target_modules=["lin"]))
    probe_stats = lora_stats(probe)
    init_A = probe.base_model.model.lin.lora_A["default"].weight.detach().numpy().copy()

    save_file({"ids": ids.numpy().astype(np.int32), "logits_base": logits_base, "logits_lora": logits_lora,
               "init_A": init_A}, "expected.safetensors")
    with open("expected.json", "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                   "peft": peft.__version__, "init_tiny": init_stats, "init_probe": probe_stats}, f, indent=1)
    print(json.dumps(probe_stats))


if __name__ == "__main__":
    main()
