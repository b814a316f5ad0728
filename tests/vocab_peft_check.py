#!/usr/bin/env python3
"""Check that PEFT (and transformers) load what luxtrain writes after `vocab add`
and `train --lora-rank R --train-embeddings new|all`.

Usage: vocab_peft_check.py to32 SRC DST
         the model folder SRC saved as float32 into DST (tokenizer files and
         luxtrain_vocab.json copied), so that luxtrain's merge is exact
       vocab_peft_check.py logits BASE ADAPTER IDS LOGITS.npy
         PEFT's logits of BASE + ADAPTER (PeftModel.from_pretrained, eval) for
         the comma-separated IDS against luxtrain's (score --logits of the
         merged folder); exit 1 when they differ by more than 1e-4
       vocab_peft_check.py config ADAPTER
         PEFT's LoraConfig.from_pretrained(ADAPTER) saved again
         (save_pretrained) is ADAPTER/adapter_config.json byte for byte, but
         for the order of target_modules (PEFT writes a set's order); exit 1
         otherwise
Needs torch, transformers and peft (tools/requirements-gen.txt).
"""
import shutil
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def main():
    if sys.argv[1] == "to32":
        src, dst = sys.argv[2], sys.argv[3]
        AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).save_pretrained(dst)
        for f in ("tokenizer.json", "tokenizer_config.json", "luxtrain_vocab.json"):
            shutil.copy(src + "/" + f, dst + "/" + f)
        return 0
    if sys.argv[1] == "config":
        import json
        import tempfile

        from peft import LoraConfig
        adapter = sys.argv[2]
        with open(adapter + "/adapter_config.json") as f:
            ours = f.read()
        with tempfile.TemporaryDirectory() as d:
            LoraConfig.from_pretrained(adapter).save_pretrained(d)
            with open(d + "/adapter_config.json") as f:
                theirs = json.load(f)
        mine = json.loads(ours)
        if sorted(theirs.get("target_modules") or []) != sorted(mine.get("target_modules") or []):
            print("target_modules: PEFT %s, luxtrain %s" % (theirs.get("target_modules"), mine.get("target_modules")))
            return 1
        theirs["target_modules"] = mine["target_modules"]
        want = json.dumps(theirs, indent=2, sort_keys=True)
        if want != ours:
            print("%s/adapter_config.json is not as PEFT writes it:\n--- PEFT\n%s\n--- luxtrain\n%s" % (adapter, want, ours))
            return 1
        print("%s/adapter_config.json: as PEFT %s writes it" % (adapter, theirs.get("peft_version")))
        return 0
    from peft import PeftModel
    base, adapter, npy = sys.argv[2], sys.argv[3], sys.argv[5]
    ids = [int(x) for x in sys.argv[4].split(",")]
    m = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    pm = PeftModel.from_pretrained(m, adapter).eval()
    with torch.no_grad():
        lg = pm(torch.tensor([ids])).logits[0].float().numpy()
    ours = np.load(npy)
    d = float(np.abs(lg - ours).max())
    print("%s: max |PEFT - luxtrain| = %.3g (logits up to %.3g)" % (adapter, d, float(np.abs(lg).max())))
    return 0 if d < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
