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

And tests/fixtures/config/longrope.json: Phi-3 configs with LongRoPE (the
Phi-3.5-mini and Phi-4-mini geometries, partial rotary, given factor /
attention_factor, the v5 rope_parameters form) and what transformers 5
computes for them: the short and long inv_freq (_compute_longrope_parameters,
the long one as longrope_frequency_update asks for it) and the attention
factor.

All three:
    python tools/gen_config_fixture.py rope|v5-configs|longrope
with the generator venv (tools/requirements-gen.txt; tools/gen_fixtures.sh makes it).
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


def rotary_inv_freq(config):
    """inv_freq of the model's own rotary embedding module (<Model>RotaryEmbedding; transformers 5
    computes default RoPE there and scaled RoPE with ROPE_INIT_FUNCTIONS), float32"""
    import importlib

    mod = importlib.import_module(f"transformers.models.{config.model_type}.modeling_{config.model_type}")
    cls = [getattr(mod, n) for n in dir(mod) if n.endswith("RotaryEmbedding")]
    if len(cls) != 1:
        sys.exit(f"{config.model_type}: expected one rotary embedding class, found {cls}")
    return cls[0](config).inv_freq


def write_rope():
    out = {"transformers": transformers.__version__, "cases": {}}
    for name, cfg in CASES.items():
        config = AutoConfig.for_model(**json.loads(json.dumps(cfg)))  # a copy: the config edits its rope dict
        inv_freq = rotary_inv_freq(config)
        out["cases"][name] = {"config": cfg, "head_dim": int(config.head_dim if hasattr(config, "head_dim") else
                                                               config.hidden_size // config.num_attention_heads),
                              "inv_freq": [float(v) for v in inv_freq.tolist()]}
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", OUT)


def phi3_case(head_dim, heads, partial, omp, max_pos, v5=False, **rope_extra):
    """a Phi-3 config.json dict (v4 form, or v5 rope_parameters) with LongRoPE factor lists for its rotary dims"""
    n = int(head_dim * partial) // 2
    short = [round(1.0 + 0.6 * (i / n) ** 3, 6) for i in range(n)]
    long = [round(1.0 + 60.0 * (i / n) ** 2 + 0.01 * i, 6) for i in range(n)]
    cfg = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "vocab_size": 32064,
           "hidden_size": head_dim * heads, "intermediate_size": 8192, "num_hidden_layers": 32,
           "num_attention_heads": heads, "num_key_value_heads": 8, "max_position_embeddings": max_pos,
           "original_max_position_embeddings": omp, "rms_norm_eps": 1e-5, "sliding_window": 262144,
           "torch_dtype": "bfloat16"}
    rope = {"short_factor": short, "long_factor": long, **rope_extra}
    if partial != 1.0:
        cfg["partial_rotary_factor"] = partial
    if v5:
        cfg["rope_parameters"] = {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": partial,
                                  "original_max_position_embeddings": omp, **rope}
    else:
        cfg["rope_theta"] = 10000.0
        cfg["rope_scaling"] = {"type": "longrope", **rope}
    return cfg


LONGROPE = {
    "phi3_5_mini": phi3_case(96, 32, 1.0, 4096, 131072),             # attention factor from 131072 / 4096
    "phi4_mini": phi3_case(128, 24, 0.75, 4096, 131072),             # 96 of 128 dims rotated
    "given_factors": phi3_case(64, 8, 0.5, 2048, 8192, factor=8.0, attention_factor=1.25),
    "no_extension": phi3_case(64, 8, 1.0, 4096, 4096),               # factor 1: attention factor 1
    "phi4_mini_v5": phi3_case(128, 24, 0.75, 4096, 131072, v5=True),
}


def write_longrope():
    from transformers import Phi3Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    out = {"transformers": transformers.__version__, "cases": {}}
    fn = ROPE_INIT_FUNCTIONS["longrope"]
    for name, cfg in LONGROPE.items():
        kw = {k: v for k, v in json.loads(json.dumps(cfg)).items()  # a copy: Phi3Config edits its rope dict
              if k not in ("architectures", "model_type", "torch_dtype")}
        config = Phi3Config(**kw)
        omp = config.rope_parameters["original_max_position_embeddings"]
        short, att = fn(config, "cpu")
        long, att2 = fn(config, "cpu", seq_len=omp + 1)
        assert att == att2
        out["cases"][name] = {"config": cfg, "rotary_dim": 2 * len(short), "attention_factor": att,
                              "inv_freq_short": [float(v) for v in short.tolist()],
                              "inv_freq_long": [float(v) for v in long.tolist()]}
    path = os.path.join(HERE, "..", "tests", "fixtures", "config", "longrope.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", path)


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
    elif what == "longrope":
        write_longrope()
    else:
        sys.exit("usage: gen_config_fixture.py rope|v5-configs|longrope")
