#!/usr/bin/env python3
"""gen_cpu_ops_fixtures.py -- PyTorch reference for the backend's AdamW op
(tests/test_cpu_ops.c, test_adamw_torch): torch.optim.AdamW (foreach=False,
the CPU single-tensor path) over a few steps on float32 tensors.

Writes tests/fixtures/cpu_ops/adamw_torch.bin, little-endian:
  b"LTADAMW1"
  int32 count, int32 steps, int32 0
  float32 lr, beta1, beta2, eps, grad_scale
  count x { int32 n, float32 weight_decay, float32[n] initial param }
  steps x { count x float32[n] grad (before grad_scale),
            count x { float32[n] param, float32[n] exp_avg, float32[n] exp_avg_sq } after the step }
Torch receives grad * grad_scale rounded to float32 (as clip_grad_norm_
scales the gradients in place). All hyper-parameters are float32 values, so
torch's Python-float arithmetic sees the same numbers as the C op.

Run: tools/gen_fixtures.sh run tools/gen_cpu_ops_fixtures.py (versions pinned
in tools/requirements-gen.txt). Not run by CI: the fixture is committed.
"""
import os
import struct

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "cpu_ops", "adamw_torch.bin")

f32 = lambda x: float(np.float32(x))
LR, B1, B2, EPS, GSCALE = f32(2e-3), f32(0.9), f32(0.95), f32(1e-8), f32(0.8125)
SIZES = [37, 1, 515]          # vectorized body and scalar tails
WDS = [f32(0.1), 0.0, f32(0.01)]
STEPS = 5


def main():
    rng = np.random.default_rng(20240601)
    init = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
    params = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in init]
    opt = torch.optim.AdamW([{"params": [p], "weight_decay": wd} for p, wd in zip(params, WDS)],
                            lr=LR, betas=(B1, B2), eps=EPS, foreach=False, fused=False)
    buf = bytearray(b"LTADAMW1")
    buf += struct.pack("<3i", len(SIZES), STEPS, 0)
    buf += struct.pack("<5f", LR, B1, B2, EPS, GSCALE)
    for x, wd in zip(init, WDS):
        buf += struct.pack("<if", x.size, wd) + x.astype("<f4").tobytes()
    for s in range(STEPS):
        grads = []
        for n in SIZES:
            g = rng.standard_normal(n).astype(np.float32)
            g *= np.float32(10.0) ** rng.integers(-6, 2, n).astype(np.float32)  # wide range of magnitudes
            grads.append(g.astype(np.float32))
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g.copy()) * torch.tensor(GSCALE, dtype=torch.float32)
        opt.step()
        for g in grads:
            buf += g.astype("<f4").tobytes()
        for p in params:
            st = opt.state[p]
            for t in (p.detach(), st["exp_avg"], st["exp_avg_sq"]):
                buf += t.numpy().astype("<f4").tobytes()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    tmp = OUT + ".tmp"
    with open(tmp, "wb") as f:
        f.write(bytes(buf))
    os.replace(tmp, OUT)
    print(f"wrote {OUT} ({len(buf)} bytes, torch {torch.__version__})")


if __name__ == "__main__":
    main()
