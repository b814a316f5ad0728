#!/usr/bin/env python3
"""gen_vocab_peft_fixture.py -- the reference for tests/test_vocab_train.c:
LoRA adapters with trained embeddings exactly as PEFT 0.21.2's save_pretrained
writes them, the tiny bases they belong to, and PEFT's logits.

Writes under tests/fixtures/vocab_peft/:
  base_untied/, base_tied/
      tiny LlamaForCausalLM (hidden 32, 2 layers, 4 heads / 2 kv heads,
      intermediate 48, vocab 64; lm_head untied / tied), F32 save_pretrained
  <base>_new/   LoraConfig(r=4, lora_alpha=8, target_modules=[q_proj, v_proj],
                trainable_token_indices = [60, 61, 62, 63] (tied: a list; PEFT
                ties lm_head) or {"embed_tokens": ids, "lm_head": ids} (untied))
  <base>_all/   the same LoRA with modules_to_save = ["embed_tokens", "lm_head"]
                (untied) or ["embed_tokens"] + ensure_weight_tying (tied)
      every lora_A / lora_B and every trained embedding value set to random
      values, then save_pretrained
  expected.safetensors
      ids (1, 12) I32 (the trained ids among them); logits_<case> (12, 64) F32:
      PEFT's logits of the adapted model (eval mode); logits_merged_<case>:
      the same after merge_and_unload (what `luxtrain merge` writes)
  expected.json  the versions

Run: tools/gen_fixtures.sh run tools/gen_vocab_peft_fixture.py (versions
pinned in tools/requirements-gen.txt). Not run by CI: the fixture is committed.
"""
import json
import os
import shutil

import numpy as np
import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.numpy import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "vocab_peft")
IDS = [60, 61, 62, 63]


def main():
    torch.manual_seed(20251203)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    os.chdir(OUT)
    ids = torch.tensor([[1, 60, 5, 61, 33, 62, 2, 63, 17, 60, 40, 8]])
    tensors = {"ids": ids.numpy().astype(np.int32)}
    for tied in (False, True):
        bname = "base_tied" if tied else "base_untied"
        cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          rms_norm_eps=1e-5, tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2)
        LlamaForCausalLM(cfg).save_pretrained(bname)
        for mode in ("new", "all"):
            case = bname[5:] + "_" + mode
            base = LlamaForCausalLM.from_pretrained(bname, dtype=torch.float32).eval()
            kw = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
            if mode == "new":
                kw["trainable_token_indices"] = IDS if tied else {"embed_tokens": IDS, "lm_head": IDS}
            else:
                kw["modules_to_save"] = ["embed_tokens"] if tied else ["embed_tokens", "lm_head"]
                if tied:
                    kw["ensure_weight_tying"] = True
            model = get_peft_model(base, LoraConfig(**kw))
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if p.requires_grad:
                        p.copy_(torch.randn_like(p) * (0.1 if "lora_" in name else 1.0))
            model.save_pretrained(case)
            # what a user gets: the adapter loaded from the folder onto a fresh base
            fresh = LlamaForCausalLM.from_pretrained(bname, dtype=torch.float32).eval()
            loaded = PeftModel.from_pretrained(fresh, case).eval()
            with torch.no_grad():
                tensors["logits_" + case] = loaded(ids).logits[0].numpy().copy()
                merged = loaded.merge_and_unload()
                tensors["logits_merged_" + case] = merged(ids).logits[0].numpy().copy()
            print(case, float(np.abs(tensors["logits_" + case] - tensors["logits_merged_" + case]).max()))
    save_file(tensors, "expected.safetensors")
    with open("expected.json", "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                   "ids": IDS}, f, indent=1)


if __name__ == "__main__":
    main()
