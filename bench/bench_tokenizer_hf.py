#!/usr/bin/env python3
"""Hugging Face tokenizers throughput on the same corpus, one thread.

Usage: RAYON_NUM_THREADS=1 bench_tokenizer_hf.py CORPUS TOKENIZER_JSON [REPEATS]
Prints "hf <MB/s> <tokens/s> <seconds> <MB/s by CPU time>" for the faster of encode() per record
and encode_batch() (both single-threaded, add_special_tokens=False, offsets
computed as tokenizers always does). MB = 1e6 bytes of the original records.
"""
import os
import sys
import time

os.environ.setdefault('RAYON_NUM_THREADS', '1')
from tokenizers import Tokenizer  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
from gen_tokenizer_corpus import read_corpus  # noqa: E402


def main():
    corpus, path = sys.argv[1], sys.argv[2]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    recs = read_corpus(corpus)
    nbytes = sum(len(b) for b in recs)
    texts = [b.decode('utf-8', 'replace') for b in recs]
    tok = Tokenizer.from_file(path)
    tok.encode_batch(texts[:50], add_special_tokens=False)  # warm up
    best = best_cpu = None
    ntok = 0
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        ntok = 0
        for s in texts:
            ntok += len(tok.encode(s, add_special_tokens=False).ids)
        t1, c1 = time.perf_counter(), time.process_time()
        best = t1 - t0 if best is None else min(best, t1 - t0)
        best_cpu = c1 - c0 if best_cpu is None else min(best_cpu, c1 - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        encs = tok.encode_batch(texts, add_special_tokens=False)
        t1, c1 = time.perf_counter(), time.process_time()
        best = min(best, t1 - t0)
        best_cpu = min(best_cpu, c1 - c0)
        del encs
    # MB/s (wall), tokens/s (wall), seconds (wall), MB/s (process CPU time)
    print('hf %.3f %.0f %.3f %.3f' % (nbytes / best / 1e6, ntok / best, best, nbytes / best_cpu / 1e6))


if __name__ == '__main__':
    main()
