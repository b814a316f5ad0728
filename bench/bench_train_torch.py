#!/usr/bin/env python3
"""bench_train_torch.py -- the step of bench/bench_train_cpu.c in PyTorch on
the CPU: forward + backward + clip_grad_norm_(1.0) + torch.optim.AdamW, full
fine-tuning or LoRA (PEFT, r 8, alpha 16, all seven projections), f32,
random tokens and targets, one warm-up step. Prints tokens/s and peak RSS.

    /work/venv-gen/bin/python bench/bench_train_torch.py [MODEL_DIR] [B] [T] [ITERS] [full|lora] [THREADS]
"""
import os
import resource
import sys
import time

import torch
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
a = sys.argv[1:]
model_dir = a[0] if len(a) > 0 else os.path.join(ROOT, "data", "sample", "model")
B = int(a[1]) if len(a) > 1 else 4
T = int(a[2]) if len(a) > 2 else 256
iters = int(a[3]) if len(a) > 3 else 10
mode = a[4] if len(a) > 4 else "full"
threads = int(a[5]) if len(a) > 5 else 2
torch.set_num_threads(threads)
torch.manual_seed(1)

model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
model.config.use_cache = False
if mode == "lora":
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
V = model.config.vocab_size
ids = torch.randint(0, V, (B, T))
tg = torch.randint(0, V, (B, T))


def step():
    opt.zero_grad(set_to_none=True)
    logits = model(input_ids=ids, use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(B * T, V).float(), tg.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.item()


step()
t0 = time.perf_counter()
for _ in range(iters):
    loss = step()
dt = (time.perf_counter() - t0) / iters
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
n_all = sum(p.numel() for p in model.parameters())
print(f"torch {torch.__version__} cpu {mode}: {model_dir}, {n_all} parameters ({sum(p.numel() for p in params)} "
      f"trainable), batch {B} x {T}, threads {threads}")
print(f"  step {dt * 1e3:.1f} ms, {B * T / dt:.0f} tokens/s, peak RSS {rss:.1f} MiB, loss {loss:.4f}")
