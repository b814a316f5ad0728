#!/usr/bin/env python3
"""gen_optim_fixture.py -- the reference for tests/test_optim.c: what
torch.optim.AdamW, torch.nn.utils.clip_grad_norm_ and a LambdaLR warmup +
cosine schedule do over a few steps, and what the transformers schedule
functions give for the learning-rate factor.

Writes tests/fixtures/optim/adamw.safetensors (float32):
  <p>.init                 initial value of parameter p (p in W, b, n)
  <p>.grad.<s>             the gradient given at optimizer step s (s = 0..STEPS-1)
  <p>.after.<s>            the parameter after step s
  <p>.exp_avg, <p>.exp_avg_sq   AdamW state after the last step
and tests/fixtures/optim/adamw.json: hyper-parameters, per-step lr and the
total gradient norm torch computed (before clipping), and learning-rate
factors from transformers' get_*_schedule_with_warmup for several settings.

W (8, 6) is a matrix (weight decay), b (8) a bias and n (6) a norm weight
(both in a param group with weight_decay 0), as the trainer's decay mask does.
Gradients are random with a per-step scale so that some steps are clipped and
some are not. Everything runs in float32 on the CPU.

Run: tools/gen_fixtures.sh run tools/gen_optim_fixture.py (versions pinned in
tools/requirements-gen.txt). Not run by CI: the fixture is committed.
"""
import json
import math
import os

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers.optimization import (get_constant_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup,
                          get_linear_schedule_with_warmup)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "optim")

STEPS = 6
LR = 1e-2
BETAS = (0.9, 0.95)
EPS = 1e-8
WD = 0.1
CLIP = 1.0
WARMUP = 2
MIN_LR_RATIO = 0.1
GRAD_SCALES = [0.05, 0.4, 0.02, 0.3, 0.1, 0.6]  # total norms around 0.2..5, CLIP = 1


def main():
    torch.manual_seed(1234)
    shapes = {"W": (8, 6), "b": (8,), "n": (6,)}
    params = {k: torch.nn.Parameter(torch.randn(*s, dtype=torch.float32)) for k, s in shapes.items()}
    params["n"].data += 1.0  # a norm weight sits near 1
    out = {f"{k}.init": p.detach().numpy().copy() for k, p in params.items()}

    opt = torch.optim.AdamW([
        {"params": [params["W"]], "weight_decay": WD},
        {"params": [params["b"], params["n"]], "weight_decay": 0.0},
    ], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, foreach=False)

    def lam(s):  # same rule as lt_lr_factor (cosine): warmup from 0, cosine down to MIN_LR_RATIO
        if s < WARMUP:
            return s / max(1, WARMUP)
        prog = min(1.0, (s - WARMUP) / max(1, STEPS - WARMUP))
        return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * prog))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    lrs, norms = [], []
    for s in range(STEPS):
        opt.zero_grad()
        for k, p in params.items():
            g = torch.randn(*shapes[k], dtype=torch.float32) * GRAD_SCALES[s]
            p.grad = g.clone()
            out[f"{k}.grad.{s}"] = g.numpy().copy()
        lrs.append(opt.param_groups[0]["lr"])
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), CLIP)
        norms.append(float(norm))
        opt.step()
        sched.step()
        for k, p in params.items():
            out[f"{k}.after.{s}"] = p.detach().numpy().copy()
    for k, p in params.items():
        st = opt.state[p]
        out[f"{k}.exp_avg"] = st["exp_avg"].numpy().copy()
        out[f"{k}.exp_avg_sq"] = st["exp_avg_sq"].numpy().copy()

    # learning-rate factors from transformers' own schedule functions
    def factors(make, total):
        o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sc = make(o)
        f = []
        for _ in range(total):
            f.append(o.param_groups[0]["lr"])
            o.step()
            sc.step()
        return f

    sched_cases = []
    for warm, total, ratio in [(3, 20, 0.1), (0, 10, 0.0), (5, 5, 0.2), (4, 37, 0.0)]:
        sched_cases.append({"schedule": "cosine", "warmup": warm, "total": total, "min_lr_ratio": ratio,
                            "factors": factors(lambda o: get_cosine_with_min_lr_schedule_with_warmup(
                                o, warm, total, min_lr_rate=ratio), total)})
    for warm, total in [(3, 20), (0, 10), (4, 37)]:
        sched_cases.append({"schedule": "linear", "warmup": warm, "total": total, "min_lr_ratio": 0.0,
                            "factors": factors(lambda o: get_linear_schedule_with_warmup(o, warm, total), total)})
        sched_cases.append({"schedule": "constant", "warmup": warm, "total": total, "min_lr_ratio": 0.0,
                            "factors": factors(lambda o: get_constant_schedule_with_warmup(o, warm), total)})

    os.makedirs(OUT, exist_ok=True)
    save_file(out, os.path.join(OUT, "adamw.safetensors"))
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "steps": STEPS, "lr": LR, "beta1": BETAS[0], "beta2": BETAS[1], "eps": EPS,
            "weight_decay": WD, "decay": {"W": True, "b": False, "n": False}, "clip": CLIP,
            "warmup": WARMUP, "total": STEPS, "schedule": "cosine", "min_lr_ratio": MIN_LR_RATIO,
            "lrs": lrs, "grad_norms": norms, "schedules": sched_cases}
    with open(os.path.join(OUT, "adamw.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("norms", norms)
    print("lrs", lrs)


if __name__ == "__main__":
    main()
