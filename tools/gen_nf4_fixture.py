#!/usr/bin/env python3
"""Writes tests/fixtures/nf4/nf4.safetensors: NF4 quantization with double
quantization by bitsandbytes on the CPU (the reference of `--quantize nf4`).

For each case a random matrix W (bf16 or f32) is quantized with
bitsandbytes.functional.quantize_4bit(W, blocksize=64, quant_type='nf4',
compress_statistics=True) and dequantized with dequantize_4bit to f32 and to
bf16. Stored per case <c>:
  <c>.w          the input matrix (its own dtype)
  <c>.packed     U8, the packed 4-bit codes (two per byte, bitsandbytes' order)
  <c>.absmax_q   U8, the 8-bit codes of (absmax - offset), blocks of 256
  <c>.absmax2    F32, the absmax of each block of 256 (state2.absmax)
  <c>.offset     F32 [1], the mean of the fp32 absmaxes
  <c>.absmax_raw F32, the fp32 absmax per block of 64 before nesting
  <c>.deq_f32    F32, dequantize_4bit(..) as float32
  <c>.deq_bf16   BF16, dequantize_4bit(..) as bfloat16
and once: code_nf4 (the 16 NF4 values), code_dynamic (state2.code),
mean<n>.x / mean<n>.mean (random vectors and torch's float32 mean of each,
one thread: the offset's summation order on longer vectors).

Sizes include element counts that are not multiples of 64 (a short last
block), more than 256 blocks (several nested blocks and a short last one),
an odd last dimension (bitsandbytes' CPU dequantization takes its generic
path there), a single block (its nested block divides 0 by 0) and zeros.

Environment: tools/requirements-gen.txt (torch 2.15.0 + bitsandbytes 0.50.2):
tools/gen_fixtures.sh run tools/gen_nf4_fixture.py. The dynamic map bitsandbytes builds
with torch.linspace depends on torch's CPU kernels; the fixture was made on an
x86-64 machine with AVX-512.
"""
import json
import os
import sys

import torch
import bitsandbytes
import bitsandbytes.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "nf4")

# name, shape, dtype, scale
CASES = [
    ("a", (4, 64), torch.bfloat16, 0.02),      # 4 full blocks
    ("b", (3, 50), torch.bfloat16, 1.0),       # 150 elements: a 22-element last block
    ("c", (33, 70), torch.float32, 0.05),      # 37 blocks, short last one
    ("d", (130, 130), torch.bfloat16, 0.02),   # 265 blocks: two nested blocks, short last
    ("e", (96, 257), torch.bfloat16, 0.3),     # odd last dim, 386 blocks
    ("f", (128, 128), torch.float32, 0.01),    # 256 blocks: exactly one nested block
    ("g", (1, 64), torch.bfloat16, 1.0),       # one block: absmax - offset = 0 (0/0 in the nesting)
    ("h", (2, 64), torch.bfloat16, 0.0),       # all zeros
]


MEAN_SIZES = [5, 7, 8, 100, 513, 2049, 8191, 20001]


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    out = {}
    meta = {"bitsandbytes": bitsandbytes.__version__, "torch": torch.__version__, "cases": []}
    code_dyn = None
    for name, shape, dt, scale in CASES:
        w = (torch.randn(shape, generator=g) * scale)
        if name == "b":  # a few exact zeros and a large outlier
            w[0, :5] = 0
            w[1, 7] = 9.0
        w = w.to(dt)
        packed, st = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
        assert st.nested and st.blocksize == 64 and st.state2.blocksize == 256
        _, raw = torch.ops.bitsandbytes.quantize_4bit.default(w, 64, "nf4", torch.uint8)
        deq = {}
        for odt, key in ((torch.float32, "deq_f32"), (torch.bfloat16, "deq_bf16")):
            st.dtype = odt
            deq[key] = F.dequantize_4bit(packed, st).contiguous()
            assert deq[key].dtype == odt and tuple(deq[key].shape) == shape
        out[name + ".w"] = w.contiguous()
        out[name + ".packed"] = packed.reshape(-1).contiguous()
        out[name + ".absmax_q"] = st.absmax.reshape(-1).contiguous()
        out[name + ".absmax2"] = st.state2.absmax.reshape(-1).float().contiguous()
        out[name + ".offset"] = st.offset.reshape(1).float().contiguous()
        out[name + ".absmax_raw"] = raw.reshape(-1).float().contiguous()
        out.update({name + "." + k: v for k, v in deq.items()})
        code_dyn = st.state2.code.float().clone()
        meta["cases"].append({"name": name, "shape": list(shape), "dtype": str(dt).replace("torch.", "")})
    # the offset is torch's float32 mean of the absmaxes: its summation order
    # on longer vectors than the cases above reach (one thread, as below
    # 32768 values torch sums on one)
    torch.set_num_threads(1)
    for n in MEAN_SIZES:
        x = torch.rand(n, generator=g) * 0.05 + 0.01
        out["mean%d.x" % n] = x.contiguous()
        out["mean%d.mean" % n] = x.mean().reshape(1).contiguous()
    out["code_nf4"] = F.get_4bit_type("nf4", device="cpu").float().contiguous()
    out["code_dynamic"] = code_dyn.contiguous()
    save_file(out, os.path.join(OUT, "nf4.safetensors"), metadata={"meta": json.dumps(meta)})
    print("wrote", os.path.join(OUT, "nf4.safetensors"), meta, file=sys.stderr)


if __name__ == "__main__":
    main()
