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
