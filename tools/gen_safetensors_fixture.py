#!/usr/bin/env python3
"""Write tests/fixtures/safetensors/small.safetensors with the reference
`safetensors` library (torch backend) plus small.expected.json holding what
tests/test_safetensors.c must read back: per tensor its dtype, shape, the
values as float64 (floating tensors: the exact value of each element) or
integers, and for BF16/F16 the raw 16-bit patterns.

Run with the generator venv (tools/requirements-gen.txt):
    tools/gen_fixtures.sh run tools/gen_safetensors_fixture.py
"""
import json
import os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "safetensors")


def main():
    g = torch.Generator().manual_seed(1234)
    f32 = torch.randn(3, 5, generator=g, dtype=torch.float32)
    bf16 = (torch.randn(4, 3, generator=g) * 3).to(torch.bfloat16)
    f16 = torch.randn(2, 2, 3, generator=g).to(torch.float16)
    # values with special encodings: negative zero, f16 subnormal, max f16, bf16 tiny/huge
    f16_special = torch.tensor([-0.0, 6.0e-8, 1.0e-5, 65504.0, -2.5, 0.333], dtype=torch.float16)
    bf16_special = torch.tensor([-0.0, 1.0e-38, 3.0e38, -1.0e-3, 7.0], dtype=torch.bfloat16)
    tensors = {
        "model.embed_tokens.weight": f32,
        "layers.0.attn.q_proj.weight": bf16,
        "layers.0.mlp.up_proj.weight": f16,
        "special.f16": f16_special,
        "special.bf16": bf16_special,
        "scalar.f32": torch.tensor(0.125, dtype=torch.float32),
        "empty.f32": torch.zeros(0, 4, dtype=torch.float32),
        "f64": torch.tensor([1.0 / 3.0, -2.0e-300, 12345.678], dtype=torch.float64),
        "position_ids": torch.arange(7, dtype=torch.int64).reshape(1, 7) * 1000000007,
        "i32": torch.tensor([-5, 0, 2147483647], dtype=torch.int32),
        "u8": torch.tensor([0, 1, 255, 128], dtype=torch.uint8),
        "mask": torch.tensor([[True, False], [False, True]]),
    }
    metadata = {"format": "pt", "note": "luxtrain test fixture"}
    path = os.path.join(OUT, "small.safetensors")
    save_file(tensors, path, metadata=metadata)

    names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
             torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}
    exp = {"metadata": metadata, "tensors": {}}
    for name, t in tensors.items():
        e = {"dtype": names[t.dtype], "shape": list(t.shape)}
        flat = t.reshape(-1)
        if t.dtype.is_floating_point:
            e["values"] = [float(v) for v in flat.to(torch.float64).tolist()]
            if t.dtype in (torch.bfloat16, torch.float16):
                e["bits"] = [int(v) & 0xFFFF for v in flat.view(torch.int16).tolist()]
        else:
            e["values"] = [int(v) for v in flat.tolist()]
        exp["tensors"][name] = e
    with open(os.path.join(OUT, "small.expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
