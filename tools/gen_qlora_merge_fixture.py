#!/usr/bin/env python3
"""Writes tests/fixtures/qlora_merge/<model>/: the reference of
`luxtrain merge --quantize nf4` (and of QLoRA on fused projections) made by
transformers + PEFT + bitsandbytes on the CPU.

For each fixture model (tests/fixtures/models/llama: separate projections;
phi3: fused qkv_proj / gate_up_proj) a PEFT LoRA adapter with random A and B
(r 4, alpha 8, targets as written below) is saved to <model>/adapter. The base
is loaded with BitsAndBytesConfig(load_in_4bit, nf4, double quantization,
compute dtype float32), the adapter put on it with PeftModel.from_pretrained,
and for every Linear4bit of the decoder layers the weight PEFT's
merge (peft/tuners/lora/bnb.py, Linear4bit.merge) computes before it
re-quantizes it is stored in <model>/expected.safetensors under the module's
weight name:
    w_data = dequantize_bnb_weight(weight, state=weight.quant_state)
             + get_delta_weight(adapter)        (adapted modules)
    w_data = dequantize_bnb_weight(weight, ...) (the other Linear4bit layers)
The dequantization is bitsandbytes' generic one (backends/default/ops.py,
_dequantize_4bit_compute: the flat blocks of 64 its quantize_4bit and CUDA
kernels use), with the nested absmaxes dequantized as dequantize_4bit does.
bitsandbytes 0.50.2's native CPU kernel (cdequantize_blockwise_cpu_nf4_fp32,
which dequantize_bnb_weight reaches for an even last dimension) indexes the
absmax of row i, column j as i * (cols // 64) + j // 64: the same values when
cols is a multiple of 64 (every real model), other values for the fixtures'
intermediate size 96 (down_proj). expected.json lists the modules where the
two agree ("cpu_kernel_agrees") and those where they do not.
bitsandbytes' CPU quantize_blockwise (the nested absmax codes) searches the
dynamic map with an approximate bucket search (BinSearch's Direct2), then
compares the entry it found with the next one: in rare near-ties it keeps the
farther entry. luxtrain takes the nearest entry (core/lt_nf4.c); the blocks of
64 where bitsandbytes' code is not the nearest are listed per tensor in
expected.json ("nested_not_nearest"), their values differ by one step of the
dynamic map.
Environment: tools/requirements-gen.txt (torch 2.15.0, transformers 5.24.0,
peft 0.21.2, bitsandbytes 0.50.2):
    bash tools/gen_fixtures.sh run tools/gen_qlora_merge_fixture.py
"""
import json
import os

import torch
import bitsandbytes as bnb
import bitsandbytes.functional as BF
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.integrations import dequantize_bnb_weight
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "tests", "fixtures", "models")
OUT = os.path.join(HERE, "..", "tests", "fixtures", "qlora_merge")

CASES = {
    "llama": ["q_proj", "v_proj", "down_proj"],
    "phi3": ["qkv_proj", "down_proj"],
}


def main():
    torch.manual_seed(1234)
    for name, targets in CASES.items():
        base_dir = os.path.join(MODELS, name)
        out = os.path.join(OUT, name)
        os.makedirs(out, exist_ok=True)
        plain = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, init_lora_weights=False,
                         task_type="CAUSAL_LM")
        pm = get_peft_model(plain, cfg)
        with torch.no_grad():  # larger B than PEFT's init: a delta well above the NF4 steps
            for n, p in pm.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn_like(p) * 0.1)
        ad = os.path.join(out, "adapter")
        pm.save_pretrained(ad)
        os.remove(os.path.join(ad, "README.md"))  # PEFT's model card
        with open(os.path.join(ad, "adapter_config.json")) as f:
            ac = json.load(f)
        ac["base_model_name_or_path"] = "tests/fixtures/models/" + name  # not this machine's path
        with open(os.path.join(ad, "adapter_config.json"), "w") as f:
            json.dump(ac, f, indent=2, sort_keys=True)
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, quantization_config=q,
                                                    device_map="cpu")
        model = PeftModel.from_pretrained(base, os.path.join(out, "adapter"))
        expected, n4, agree, differ, not_nearest = {}, 0, [], [], {}
        orig = load_file(os.path.join(base_dir, "model.safetensors"))
        for mname, mod in model.named_modules():
            if not isinstance(mod, bnb.nn.Linear4bit):
                continue
            n4 += 1
            w = mod.weight
            owner = model.get_submodule(mname.rsplit(".base_layer", 1)[0]) if mname.endswith(".base_layer") else None
            with torch.no_grad():
                qs = w.quant_state
                absmax = BF.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset
                code = BF.get_4bit_type("nf4", device="cpu")
                wd = _dequantize_4bit_compute(w.data.reshape(-1).view(torch.uint8), absmax.float(), code,
                                              qs.blocksize, qs.shape, torch.float32)
                (agree if torch.equal(wd, dequantize_bnb_weight(w, state=qs).float()) else differ).append(mname)
                if owner is not None and "default" in getattr(owner, "lora_A", {}):
                    wd = wd + owner.get_delta_weight("default")
            key = mname.replace("base_model.model.", "", 1).replace(".base_layer", "") + ".weight"
            expected[key] = wd.contiguous()
            # the nested codes bitsandbytes chose against the nearest entries of its map
            am = orig[key].float().reshape(-1).abs()
            nb = -(-am.numel() // 64)
            am = torch.nn.functional.pad(am, (0, nb * 64 - am.numel())).reshape(nb, 64).max(1)[0]
            a2 = qs.state2.absmax.repeat_interleave(256)[:nb]
            x = (am - qs.offset) / a2
            near = (x[:, None] - qs.state2.code[None, :]).abs().argmin(1)
            bad = (near != qs.absmax.long()).nonzero().flatten().tolist()
            if bad:
                not_nearest[key] = bad
        save_file(expected, os.path.join(out, "expected.safetensors"))
        with open(os.path.join(out, "expected.json"), "w") as f:
            json.dump({"linear4bit_modules": n4, "cpu_kernel_agrees": agree, "cpu_kernel_differs": differ,
                       "nested_not_nearest": not_nearest, "targets": targets, "r": 4, "lora_alpha": 8,
                       "versions": {"torch": torch.__version__, "bitsandbytes": bnb.__version__,
                                    "peft": __import__("peft").__version__,
                                    "transformers": __import__("transformers").__version__}}, f, indent=1)
            f.write("\n")
        print(name, n4, "Linear4bit modules;", len(expected), "tensors")


if __name__ == "__main__":
    main()
