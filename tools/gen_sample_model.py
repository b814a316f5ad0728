#!/usr/bin/env python3
"""gen_sample_model.py -- make data/sample/model/, the tiny toy base model the
quickstart fine-tunes (not a useful LLM: ~1M parameters, a few minutes of CPU).

  1. tokenizer.json: byte-level BPE trained with HF `tokenizers` (BpeTrainer)
     on tools/sample_pretrain_lb.txt + every string in data/sample/*.jsonl.
     Pre-tokenizer: Split(Llama 3 regex, Isolated) + ByteLevel(use_regex=false),
     decoder ByteLevel, ignore_merges, all 256 byte tokens in the vocabulary,
     no normalizer, no post-processor (no BOS); specials <|endoftext|>,
     <|im_start|>, <|im_end|> appended at the end of the vocabulary.
  2. tokenizer_config.json: a plain ChatML chat_template (no default system
     prompt), eos <|im_end|>, pad <|endoftext|>, no bos.
  3. config.json / model.safetensors / generation_config.json: a tiny
     LlamaForCausalLM (hidden 128, 4 layers, 4 heads, 2 kv heads, tied
     embeddings) pretrained with AdamW on the prose only (documents separated
     by <|endoftext|>), so it has seen Luxembourgish but not the instruction
     format; saved in BF16.

Deterministic (seeds, 2 CPU threads). Run with the generator venv
(tools/requirements-gen.txt), e.g.
    tools/gen_fixtures.sh run tools/gen_sample_model.py [--steps N] [--out DIR]
The committed data/sample/model was made with torch 2.5.1 / transformers 4.51.3
(its gen_log.txt); made again with today's pins it would differ.
The log (loss curve) goes to stdout and to OUT/gen_log.txt.
"""
import argparse
import glob
import json
import math
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "sample")
PROSE = os.path.join(ROOT, "tools", "sample_pretrain_lb.txt")

# The Llama 3 pre-tokenizer pattern, character for character as in Meta's
# tokenizer.json (luxtrain's C tokenizer recognises it by exact match).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Plain ChatML, no default system prompt (renders like Qwen3's template for
# conversations without reasoning or tools).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

MODEL_MAX_LEN = 512


def log(msg, fh=[]):
    print(msg, flush=True)
    if fh:
        fh[0].write(msg + "\n")
        fh[0].flush()


def strings_of(obj):
    """Every string value in a JSON record (depth first)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k in sorted(obj):
            yield from strings_of(obj[k])
    elif isinstance(obj, list):
        for v in obj:
            yield from strings_of(v)


def read_prose():
    with open(PROSE, encoding="utf-8") as f:
        paras = [p.strip() for p in f.read().split("\n\n")]
    return [p for p in paras if p]


def read_sample_jsonl():
    """(all strings, raw `text` records) of data/sample/*.jsonl, files in name order."""
    strings, texts = [], []
    for path in sorted(glob.glob(os.path.join(SAMPLE, "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                rec = json.loads(line)
                strings.extend(strings_of(rec))
                if os.path.basename(path) != "exam_lb.jsonl" and isinstance(rec.get("text"), str):
                    texts.append(rec["text"])
    return strings, texts


# ---------------------------------------------------------------------------
# tokenizer


def train_tokenizer(texts, vocab_size):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIALS),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(SPECIALS)

    # Normalise the JSON: ignore_merges set, no post-processor, and check the
    # pattern and the 256 byte tokens are there.
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    j["post_processor"] = None
    j["normalizer"] = None
    assert j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == LLAMA3_PATTERN
    vocab = j["model"]["vocab"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    missing = [c for c in alphabet if c not in vocab]
    assert not missing, f"byte tokens missing from the vocabulary: {missing}"
    return Tokenizer.from_str(json.dumps(j, ensure_ascii=False)), j


def write_tokenizer_files(out, tok_json):
    from tokenizers import Tokenizer

    path = os.path.join(out, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tok_json, f, ensure_ascii=False, indent=2)
        f.write("\n")
    tok = Tokenizer.from_file(path)
    added = {}
    for t in tok_json["added_tokens"]:
        added[str(t["id"])] = {
            "content": t["content"], "lstrip": t["lstrip"], "normalized": t["normalized"],
            "rstrip": t["rstrip"], "single_word": t["single_word"], "special": t["special"],
        }
    cfg = {
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": MODEL_MAX_LEN,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=2)
        f.write("\n")
    return tok


# ---------------------------------------------------------------------------
# model


def pretrain(args, tok, docs, out):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    eot = tok.token_to_id("<|endoftext|>")
    im_end = tok.token_to_id("<|im_end|>")
    n_tok = tok.get_vocab_size()
    vocab = (n_tok + 63) // 64 * 64

    # documents -> one stream "<eot> doc <eot> doc ..."; every 12th document held out
    rng = random.Random(args.seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    val_ids = {i for k, i in enumerate(order) if k % 12 == 0}
    train_stream, val_stream = [], []
    for i, d in enumerate(docs):
        ids = [eot] + tok.encode(d, add_special_tokens=False).ids
        (val_stream if i in val_ids else train_stream).extend(ids)
    train_t = torch.tensor(train_stream, dtype=torch.long)
    val_t = torch.tensor(val_stream, dtype=torch.long)
    log(f"pretraining data: {len(docs)} documents, {len(train_stream)} train tokens, "
        f"{len(val_stream)} held-out tokens ({len(val_ids)} documents)")

    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, hidden_act="silu",
        max_position_embeddings=MODEL_MAX_LEN, rope_theta=10000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
        bos_token_id=None, eos_token_id=im_end, pad_token_id=eot, initializer_range=0.02,
    )
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: LlamaForCausalLM, vocab {vocab} (tokenizer {n_tok}), {n_params} parameters")

    T, B = args.seq, args.batch
    gen = torch.Generator().manual_seed(args.seed)

    def batch(stream, b, g):
        ix = torch.randint(0, stream.numel() - T - 1, (b,), generator=g)
        x = torch.stack([stream[i:i + T + 1] for i in ix.tolist()])
        return x

    # fixed held-out windows (non-overlapping) for a stable val loss
    nval = max(1, (val_t.numel() - 1) // T)
    val_x = torch.stack([val_t[k * T:k * T + T + 1] for k in range(min(nval, 16))])

    def lm_loss(x):
        # x: (B, T+1); next-token CE over all T positions
        logits = model(input_ids=x[:, :-1], use_cache=False).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    warm = max(1, args.steps // 20)

    def lr_at(s):
        if s < warm:
            return args.lr * (s + 1) / warm
        p = (s - warm) / max(1, args.steps - warm)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    def val_loss_own():
        model.eval()
        with torch.no_grad():
            l = lm_loss(val_x).item()
        model.train()
        return l

    t0 = time.time()
    log(f"AdamW lr {args.lr} (warmup {warm}, cosine to 10%), wd 0.1, batch {B} x seq {T}, {args.steps} steps, "
        f"{args.threads} threads")
    log(f"step {0:5d}  val {val_loss_own():.4f}  (uniform would be {math.log(vocab):.4f})")
    ema = None
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = lm_loss(batch(train_t, B, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.9 * ema + 0.1 * loss.item()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            log(f"step {step + 1:5d}  train {loss.item():.4f}  (ema {ema:.4f})  val {val_loss_own():.4f}  "
                f"lr {lr_at(step):.2e}  {time.time() - t0:6.1f}s")

    model = model.to(torch.bfloat16)
    model.config.torch_dtype = torch.bfloat16
    model.generation_config = GenerationConfig(
        bos_token_id=None, eos_token_id=[im_end, eot], pad_token_id=eot, do_sample=False, max_new_tokens=64,
    )
    model.save_pretrained(out, safe_serialization=True)
    log(f"bf16 val loss {val_loss_own():.4f}")

    # a greedy continuation, for the log
    prompt = "Lëtzebuerg ass"
    ids = torch.tensor([[eot] + tok.encode(prompt, add_special_tokens=False).ids])
    with torch.no_grad():
        o = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False)
    log("greedy continuation: " + repr(tok.decode(o[0, 1:].tolist(), skip_special_tokens=False)))
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(SAMPLE, "model"))
    ap.add_argument("--vocab", type=int, default=2048, help="tokenizer size, specials included")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=25)
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, "gen_log.txt"), "w", encoding="utf-8")
    log.__defaults__[0].append(logf)
    import tokenizers
    import torch
    import transformers
    log(f"gen_sample_model.py: torch {torch.__version__}, transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__}")

    prose = read_prose()
    strings, raw_texts = read_sample_jsonl()
    log(f"prose: {len(prose)} paragraphs, {sum(len(p.encode()) for p in prose)} bytes; "
        f"sample jsonl: {len(strings)} strings, {sum(len(s.encode()) for s in strings)} bytes")

    _, tok_json = train_tokenizer(prose + strings, args.vocab)
    tok = write_tokenizer_files(args.out, tok_json)
    nbytes = sum(len(s.encode()) for s in strings)
    ntok = sum(len(tok.encode(s, add_special_tokens=False).ids) for s in strings)
    log(f"tokenizer: {tok.get_vocab_size()} ids ({len(tok_json['model']['merges'])} merges); sample jsonl "
        f"{ntok} tokens / {nbytes} bytes = {ntok / nbytes:.3f} tokens per byte")
    for s in strings:
        assert tok.decode(tok.encode(s, add_special_tokens=False).ids, skip_special_tokens=False) == s

    # pretraining: the prose and the sample's raw `text` records, never the instructions
    pretrain(args, tok, prose + raw_texts, args.out)
    for name in sorted(os.listdir(args.out)):
        log(f"  {name:24s} {os.path.getsize(os.path.join(args.out, name)):9d} bytes")
    logf.close()


if __name__ == "__main__":
    main()
