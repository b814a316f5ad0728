#!/usr/bin/env python3
"""Write tests/fixtures/config/llama3_rope.json: config.json dictionaries
with llama3 rope scaling (and one without scaling) and the inv_freq that
transformers computes for them (transformers.modeling_rope_utils
ROPE_INIT_FUNCTIONS, float32 as transformers does). tests/test_config.c
parses each config with lt_config_parse and compares
lt_config_rope_inv_freq against "inv_freq".

It also writes tests/fixtures/config/v5/<model>/config.json: each tiny model
config under tests/fixtures/models/ loaded and saved again by transformers 5
(save_pretrained writes rope_parameters and dtype instead of rope_theta,
rope_scaling and torch_dtype). tests/test_model_fixtures.c runs every model
with both forms and expects the same logits. Saving a config needs no torch.

Two environments:
    /work/venv-gen/bin/python tools/gen_config_fixture.py rope         # tools/requirements-gen.txt (4.51.3 + torch)
    /work/venv-gen5/bin/python tools/gen_config_fixture.py v5-configs  # tools/requirements-gen5.txt (5.x, no torch)
"""
import glob
import json
import os
import sys

import transformers
from transformers import AutoConfig

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "config", "llama3_rope.json")

BASE = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "rms_norm_eps": 1e-05,
    "torch_dtype": "bfloat16",
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
}

CASES = {
    # Llama 3.1 8B geometry
    "llama3_1_8b": dict(BASE, vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                        rope_theta=500000.0, tie_word_embeddings=False,
                        rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 8192, "rope_type": "llama3"}),
    # Llama 3.2 1B geometry (head_dim 64, factor 32)
    "llama3_2_1b": dict(BASE, vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                        num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                        rope_theta=500000.0, tie_word_embeddings=True,
                        rope_scaling={"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 8192, "rope_type": "llama3"}),
    # legacy "type" key, odd factors so many frequencies fall in the blended band
    "llama3_custom": dict(BASE, vocab_size=1000, hidden_size=768, intermediate_size=2048, num_hidden_layers=2,
                          num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=4096,
                          rope_theta=10000.0,
                          rope_scaling={"factor": 4.0, "low_freq_factor": 0.5, "high_freq_factor": 8.0,
                                        "original_max_position_embeddings": 1024, "type": "llama3"}),
    # no scaling (qwen2-like theta)
    "default_qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936,
                      "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                      "num_attention_heads": 14, "num_key_value_heads": 2, "rope_theta": 1000000.0,
                      "rope_scaling": None, "hidden_act": "silu", "rms_norm_eps": 1e-06},
}


def write_rope():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    out = {"transformers": transformers.__version__, "cases": {}}
    for name, cfg in CASES.items():
        config = AutoConfig.for_model(**cfg)
        rope_type = (cfg.get("rope_scaling") or {}).get("rope_type") or (cfg.get("rope_scaling") or {}).get("type")
        fn = ROPE_INIT_FUNCTIONS[rope_type or "default"]
        inv_freq, _ = fn(config, "cpu")
        out["cases"][name] = {"config": cfg, "head_dim": int(config.head_dim if hasattr(config, "head_dim") else
                                                               config.hidden_size // config.num_attention_heads),
                              "inv_freq": [float(v) for v in inv_freq.tolist()]}
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", OUT)


def write_v5_configs():
    if int(transformers.__version__.split(".")[0]) < 5:
        sys.exit("v5-configs needs transformers 5.x, found " + transformers.__version__)
    models = os.path.join(HERE, "..", "tests", "fixtures", "models")
    for src in sorted(glob.glob(os.path.join(models, "*", "config.json"))):
        name = os.path.basename(os.path.dirname(src))
        config = AutoConfig.from_pretrained(os.path.dirname(src))  # reads config.json only
        dst = os.path.join(HERE, "..", "tests", "fixtures", "config", "v5", name)
        os.makedirs(dst, exist_ok=True)
        config.save_pretrained(dst)
        print("wrote", os.path.join(dst, "config.json"))


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "rope":
        write_rope()
    elif what == "v5-configs":
        write_v5_configs()
    else:
        sys.exit("usage: gen_config_fixture.py rope|v5-configs")
