#!/usr/bin/env python3
"""gen_eval_fixtures.py -- the reference for tests/test_eval_mc.c and
tests/test_eval_compare.c: a tiny random LlamaForCausalLM whose vocabulary is
the real Llama 2 tokenizer's (../shared/tokenizers/llama2, 32,000 ids), a task
file full of edge cases, and the multiple-choice log-likelihoods and
accuracies that transformers computes for it, following the algorithm of
lm-evaluation-harness (HFLM, v0.4.x):

  * context/continuation split on the tokenization of the whole string:
    trailing whitespace of the context (str.rstrip) moves into the
    continuation; whole = enc(context + continuation), ctx = enc(context),
    continuation tokens = whole[len(ctx):]
  * enc() applies the tokenizer's post-processor (the HF default
    add_special_tokens=True: Llama 2 prepends <s>), except when the string
    already starts with the BOS text "<s>"
  * an empty context becomes [bos] and the continuation is encoded without
    special tokens
  * input = (ctx + cont)[-(max_length + 1):][:-1]; the log-likelihood is the
    sum of log_softmax over the last len(cont) positions, gathered at cont
  * acc = argmax(ll), acc_norm = argmax(ll / len(choice)) (code points),
    acc_bytes = argmax(ll / len(choice.encode())) -- choices without the
    delimiter -- numpy argmax (first maximum wins)
  * stderr = sample std (n - 1) / sqrt(n)

Each document runs alone through the model (no packing), in float32 (the
BF16 checkpoint is loaded back and upcast, so the C side sees the same
weights). Three configurations are written: delimiter " ", delimiter ""
(merges across the split point) and delimiter " " with max_length 12 (left
truncation).

Writes tests/fixtures/eval/:
  model/config.json, model/model.safetensors   (BF16, tied embeddings, ~1 MB)
  tasks.jsonl                                 the questions
  expected.json                               "loss": the mean loss of LOSS_TEXTS
      (for `luxtrain eval --data`); per configuration: per question
      the log-likelihood, continuation tokens / chars / bytes of each choice,
      the context and continuation ids (ctx_ids, cont_ids), the predictions,
      and the metrics overall and per category
  adapter/  a PEFT LoRA adapter (rsLoRA, r 4, q/v/down) for --adapter;
      expected.json "adapter" holds the "space" log-likelihoods with it
  compare_a.json, compare_b.json, expected_compare.json
      two synthetic result files and the exact McNemar p-values per category

Run: tools/gen_fixtures.sh run tools/gen_eval_fixtures.py
(versions pinned in tools/requirements-gen.txt)
"""
import json
import math
import os
import shutil

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "eval")
TOKDIR = os.path.join(os.path.dirname(ROOT), "shared", "tokenizers", "llama2")

CONFIGS = [
    # name, delimiter, max_length, chat template
    ("space", " ", 256, None),
    ("nodelim", "", 256, None),
    ("trunc", " ", 12, None),
    # --chat --template chatml: the context becomes a ChatML user turn plus the
    # generation prompt (apply_chat_template(add_generation_prompt=True) of the
    # plain ChatML template); the harness then uses the delimiter ""
    ("chat", "", 256, "chatml"),
]


def chatml(context):
    return "<|im_start|>user\n" + context + "<|im_end|>\n<|im_start|>assistant\n"

# id, category, context, choices, answer
QUESTIONS = [
    ("g1", "grammar", "Ech hunn d'Buch", ["gelies", "geliesen", "liesen"], 0),
    ("g2", "grammar", "Mir ginn haut an d'Schoul, well et", ["ass Méindeg", "Méindeg ass", "Méindeg sinn"], 0),
    # trailing spaces move into the continuation
    ("g3", "grammar", "Antwort:  ", ["den Hond", "der Hond", "dem Hond"], 2),
    # trailing newline (str.rstrip strips all whitespace)
    ("g4", "grammar", "Frage: Wéi seet een 'the house'?\n", ["d'Haus", "den Haus"], 0),
    # choices that start with a space
    ("v1", "vocabulary", "Wat ass eng Kaz?", [" En Déier", "Eng Planz", " E Gefier"], 0),
    # multi-byte characters at the split point
    ("v2", "vocabulary", "Schéin Dag, wéi geet et der? Et geet mer", ["ëmmer besser", "é", "gutt 😀"], 2),
    ("v3", "vocabulary", "Smiley 😀", ["😀😀", "ä", "Ënn"], 1),
    # with delimiter "" the start of "en Dag" / "er Stad" merges into the last context token
    ("v4", "vocabulary", "Lëtzebuerg", ["en Dag", "ësch", "er Stad"], 0),
    ("v5", "vocabulary", "Kaffi am Caf", ["é", "ë", "éi"], 0),
    # empty context: [bos] + continuation encoded without special tokens
    ("o1", "orthography", "", ["Moien", "Moin"], 0),
    # context that already starts with the BOS text: no second BOS
    ("o2", "orthography", "<s>Wéi schreift een dat richteg?", ["Éiweg", "Eiweg"], 0),
    # long context (exercises left truncation at max_length 12)
    ("o3", "orthography", "Déi Lëtzebuerger Sprooch gëtt vu ronn 400.000 Leit geschwat, an d'Orthographie",
     ["gouf 1975 reforméiert", "gëtt ni geännert", "ass op Franséisch"], 0),
    # uncategorized question ("category" absent)
    ("u1", None, "2 + 2 =", ["4", "5", "22"], 0),
]


LOSS_TEXTS = ["Moien, wéi geet et? Et geet mer gutt.", "Lëtzebuerg ass e klengt Land an Europa.",
              "D'Kanner spillen am Gaart 😀.", "2 + 2 = 4"]


def main():
    torch.manual_seed(20240611)
    assert int(transformers.__version__.split(".")[0]) >= 5, transformers.__version__  # tools/requirements-gen.txt
    tok_fast = Tokenizer.from_file(os.path.join(TOKDIR, "tokenizer.json"))
    # the fast tokenizer of tokenizer.json as written (transformers 4's AutoTokenizer gave it, and luxtrain
    # reads that file). transformers 5's AutoTokenizer picks LlamaTokenizer, which rebuilds the tokenizer
    # from the vocabulary and encodes a leading space differently (" Moien": [1, 6885, 1375], where
    # tokenizer.json gives [1, 28705, 6885, 1375]); the check in tok_encode stops on such a difference
    tok_hf = PreTrainedTokenizerFast.from_pretrained(TOKDIR)
    bos_id = tok_hf.bos_token_id
    bos_str = tok_hf.decode([bos_id])
    assert bos_id == 1 and bos_str == "<s>", (bos_id, bos_str)

    def tok_encode(s, add_special=None):
        if add_special is None:
            add_special = not s.startswith(bos_str)
        ids = tok_hf.encode(s, add_special_tokens=add_special)
        # the C tokenizer is checked against `tokenizers`; make sure the two agree here
        assert ids == tok_fast.encode(s, add_special_tokens=add_special).ids, s
        return ids

    def encode_pair(context, continuation):
        if context == "":
            cont = tok_encode(continuation, add_special=False)
            if cont[0] != bos_id:
                return [bos_id], cont
            return cont[:1], cont[1:]
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = tok_encode(context + continuation)
        ctx = tok_encode(context)
        return ctx, whole[len(ctx):]

    # ---- model ----
    cfg = LlamaConfig(
        vocab_size=32000, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, dtype="bfloat16")
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(torch.randn_like(p))  # std 1: peaked next-token distributions
            else:
                p.copy_(0.3 * torch.randn_like(p))
    mdir = os.path.join(OUT, "model")
    if os.path.isdir(mdir):
        shutil.rmtree(mdir)
    os.makedirs(mdir)
    model.to(torch.bfloat16).save_pretrained(mdir, safe_serialization=True)
    os.remove(os.path.join(mdir, "generation_config.json"))  # not read by anyone
    model = LlamaForCausalLM.from_pretrained(mdir, dtype=torch.float32)
    model.eval()

    # ---- task file ----
    with open(os.path.join(OUT, "tasks.jsonl"), "w", encoding="utf-8") as f:
        for qid, cat, ctx, choices, ans in QUESTIONS:
            rec = {"id": qid, "context": ctx, "choices": choices, "answer": ans}
            if cat is not None:
                rec["category"] = cat
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def loglikelihood(ctx_enc, cont_enc, max_length):
        inp = (ctx_enc + cont_enc)[-(max_length + 1):][:-1]
        with torch.no_grad():
            logits = model(torch.tensor([inp])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        n = len(cont_enc)
        sel = logp[len(inp) - n:len(inp)]
        return float(sel.gather(1, torch.tensor(cont_enc)[:, None]).sum())

    def stderr(xs):
        n = len(xs)
        if n < 2:
            return None
        mu = sum(xs) / n
        return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)

    def metrics(rows):
        out = {"n": len(rows)}
        for key in ("acc", "acc_norm", "acc_bytes"):
            xs = [r[key] for r in rows]
            out[key] = sum(xs) / len(xs)
            out[key + "_stderr"] = stderr(xs)
        return out

    expected = {"tokenizer": "tokenizers/llama2", "bos": "added (post-processor), as HF add_special_tokens=True",
                "configs": {}}
    min_margin = 1e9
    for name, delim, max_length, template in CONFIGS:
        qs, rows = {}, []
        for qid, cat, ctx, choices, ans in QUESTIONS:
            lls, ntok, nchar, nbyte, nctx, cids, kids = [], [], [], [], [], [], []
            for ch in choices:
                c_enc, k_enc = encode_pair(chatml(ctx) if template else ctx, delim + ch)
                assert len(k_enc) > 0, (qid, ch, name)
                lls.append(loglikelihood(c_enc, k_enc, max_length))
                ntok.append(len(k_enc))
                nctx.append(len(c_enc))
                cids.append(c_enc)
                kids.append(k_enc)
                nchar.append(len(ch))
                nbyte.append(len(ch.encode("utf-8")))
            lls_a = np.array(lls)
            preds = {"acc": int(np.argmax(lls_a)),
                     "acc_norm": int(np.argmax(lls_a / np.array(nchar, dtype=float))),
                     "acc_bytes": int(np.argmax(lls_a / np.array(nbyte, dtype=float)))}
            for key, norm in (("acc", None), ("acc_norm", nchar), ("acc_bytes", nbyte)):
                v = sorted((lls_a / np.array(norm, dtype=float)) if norm else lls_a)
                min_margin = min(min_margin, v[-1] - v[-2])
            row = {k: 1.0 if preds[k] == ans else 0.0 for k in preds}
            row["category"] = cat
            rows.append(row)
            qs[qid] = {"ll": lls, "tokens": ntok, "ctx_tokens": nctx, "chars": nchar, "bytes": nbyte,
                       "ctx_ids": cids, "cont_ids": kids,
                       "pred": preds["acc"], "pred_norm": preds["acc_norm"], "pred_bytes": preds["acc_bytes"]}
        cats = {}
        for c in sorted({r["category"] for r in rows if r["category"] is not None}):
            cats[c] = metrics([r for r in rows if r["category"] == c])
        expected["configs"][name] = {"delimiter": delim, "seq_len": max_length, "template": template, "questions": qs,
                                     "overall": metrics(rows), "categories": cats}
    # fp32 differences between the C runtime and torch are ~1e-5; a decision
    # closer than this could flip, so demand a clear margin
    print("smallest decision margin: %.4g" % min_margin)
    assert min_margin > 1e-3, "decision margin too small; change the seed"
    # `luxtrain eval --data`: mean -log p over the documents of a token shard
    # as `luxtrain tokenize` writes raw text ({"text"}: BOS + text + EOS, every
    # token after the first a target)
    nll, n_t = 0.0, 0
    for text in LOSS_TEXTS:
        ids = tok_encode(text, add_special=True) + [tok_hf.eos_token_id]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
        nll -= float(logp[:-1].gather(1, torch.tensor(ids[1:])[:, None]).sum())
        n_t += len(ids) - 1
    expected["loss"] = {"texts": LOSS_TEXTS, "seq_len": 64, "loss": nll / n_t, "target_tokens": n_t}
    # --adapter: a PEFT LoRA adapter (random A and B, so it changes the
    # model) and the log-likelihoods of the "space" configuration with it
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(99)
    base = LlamaForCausalLM.from_pretrained(mdir, dtype=torch.float32)
    pm = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, use_rslora=True,
                                         target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(0.5 * torch.randn_like(p))
    adir = os.path.join(OUT, "adapter")
    if os.path.isdir(adir):
        shutil.rmtree(adir)
    pm.save_pretrained(adir)
    with open(os.path.join(adir, "adapter_config.json")) as f:
        acfg = json.load(f)
    acfg["base_model_name_or_path"] = "../model"  # not the generating machine's path
    with open(os.path.join(adir, "adapter_config.json"), "w") as f:
        json.dump(acfg, f, indent=2, sort_keys=True)
    for extra in ("README.md",):
        if os.path.exists(os.path.join(adir, extra)):
            os.remove(os.path.join(adir, extra))
    pm.eval()
    ada = {}
    for qid, cat, ctx, choices, ans in QUESTIONS:
        lls = []
        for ch in choices:
            c_enc, k_enc = encode_pair(ctx, " " + ch)
            inp = (c_enc + k_enc)[:-1]
            with torch.no_grad():
                logp = torch.log_softmax(pm(input_ids=torch.tensor([inp])).logits[0].float(), dim=-1)
            sel = logp[len(inp) - len(k_enc):]
            lls.append(float(sel.gather(1, torch.tensor(k_enc)[:, None]).sum()))
        ada[qid] = lls
    expected["adapter"] = {"config": "space", "ll": ada}
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)

    gen_compare()
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(OUT) for fn in fns)
    print("wrote %s (%d bytes)" % (OUT, total))


def mcnemar_exact(b, c):
    """Two-sided exact McNemar test: binomial(b + c, 1/2) on the discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def gen_compare():
    """Two result files over the same 60 questions in 3 categories with known
    per-question correctness, and the p-values of the paired test."""
    rng = np.random.default_rng(7)
    # per category: (n, P(A right), P(B right | A right), P(B right | A wrong))
    plan = {"grammar": (30, 0.5, 0.95, 0.8), "vocabulary": (20, 0.6, 0.7, 0.4), "orthography": (10, 0.5, 1.0, 0.0)}
    qa, qb, exp = [], [], {"metric": "acc", "categories": {}}
    allpairs = []
    for cat, (n, pa, pb1, pb0) in plan.items():
        pairs = []
        for i in range(n):
            a = int(rng.random() < pa)
            b = int(rng.random() < (pb1 if a else pb0))
            pairs.append((a, b))
            qid = "%s-%02d" % (cat, i)
            # 4 choices, answer varies; a wrong prediction picks another index
            ans = int(rng.integers(4))
            qa.append({"id": qid, "category": cat, "answer": ans, "pred": ans if a else (ans + 1) % 4,
                       "pred_norm": ans, "pred_bytes": ans})
            qb.append({"id": qid, "category": cat, "answer": ans, "pred": ans if b else (ans + 2) % 4,
                       "pred_norm": ans, "pred_bytes": ans})
        allpairs += pairs
        exp["categories"][cat] = summarize(pairs)
    exp["overall"] = summarize(allpairs)
    # B lists its questions in another order: compare must pair them by id
    qb.reverse()
    for name, qs in (("compare_a.json", qa), ("compare_b.json", qb)):
        with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
            json.dump({"format": "luxtrain-eval-1", "questions": qs}, f, indent=1)
    with open(os.path.join(OUT, "expected_compare.json"), "w", encoding="utf-8") as f:
        json.dump(exp, f, indent=1)


def summarize(pairs):
    n = len(pairs)
    b = sum(1 for x, y in pairs if x and not y)
    c = sum(1 for x, y in pairs if y and not x)
    acc_a = sum(x for x, _ in pairs) / n
    acc_b = sum(y for _, y in pairs) / n
    return {"n": n, "acc_a": acc_a, "acc_b": acc_b, "diff": acc_b - acc_a, "a_only": b, "b_only": c,
            "p_value": mcnemar_exact(b, c)}


if __name__ == "__main__":
    main()
