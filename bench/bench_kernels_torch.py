#!/usr/bin/env python3
"""bench_kernels_torch.py -- PyTorch baselines for luxtrain's kernel benchmarks.

Called by `luxtrain bench kernels` / bench_kernels (core/lt_bench_kernels.c)
when `python3 -c "import torch"` works ($LT_TORCH_PYTHON, else python3):

    bench_kernels_torch.py --cases CASES.json --out OUT.json [--compile]

CASES.json (written by the C program): {"device": "cuda"|"cpu", "dtype":
"bf16"|"f32", "budget_s", "min_reps", "max_reps", "flush_bytes",
"max_seconds" (cases starting later are skipped; 0 = no limit), "cases":
[{"id", "op", shape keys...}]}. For each case this times the PyTorch
counterpart with the same method as the C side (two warm-up calls, then
enough calls to fill budget_s, clamped to [min_reps, max_reps]; CUDA events
around each call; before each call, outside the events, a write over
flush_bytes evicts L2; on the CPU time.perf_counter) and writes
OUT.json: {"torch_version", "device_name", "results": {id: {"ms", "ms_min",
"ms_max", "reps", "impl", "variants": {name: ms | "error: ..."}}}}; "ms" is
the fastest variant (an "error" key instead when none ran).

Baselines per op:
  attention_fwd / attention_bwd: F.scaled_dot_product_attention, causal,
      GQA (enable_gqa=True; if a backend refuses it, k/v repeated inside the
      timed call, as transformers' repeat_kv does), layout (B, T, H, D)
      transposed to (B, H, T, D) views like a model does; every backend of
      torch.nn.attention.sdpa_kernel that runs (flash, cuDNN, efficient) --
      the fastest is the baseline. bwd: torch.autograd.grad of a saved
      forward (retain_graph), i.e. the backward kernels alone.
  rmsnorm_fwd / rmsnorm_bwd: F.rms_norm (eager; --compile or
      LT_TORCH_COMPILE=1 also times torch.compile of it).
  add_rmsnorm_fwd: h = x + r, then F.rms_norm(h) (eager; compiled as above).
  swiglu_fwd: F.silu(gate) * up.   embedding_fwd: F.embedding.
  cross_entropy: F.cross_entropy(logits, targets, reduction="sum") and its
      gradient w.r.t. the logits (forward + backward, like the fused op).
  adamw: torch.optim.AdamW(fused=True) (foreach where fused is missing)
      over f32 parameters of the same tensor sizes.
--device cpu (from the cases file) runs everything in f32 on the CPU: a
smoke test of this script, not a baseline worth reading.
"""
import argparse
import contextlib
import json
import math
import os
import sys
import time


def log(*a):
    print("bench_kernels_torch:", *a, file=sys.stderr, flush=True)


class Timer:
    def __init__(self, torch, dev, budget_s, min_reps, max_reps, flush_bytes):
        self.torch, self.dev = torch, dev
        self.budget_s, self.min_reps, self.max_reps = budget_s, min_reps, max_reps
        self.flush = torch.empty(int(flush_bytes), dtype=torch.uint8, device=dev) if flush_bytes else None

    def _times(self, fn, reps):
        torch = self.torch
        if self.dev == "cuda":
            ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
            for i in range(reps):
                if self.flush is not None:
                    self.flush.fill_(i & 0xFF)
                ev[i][0].record()
                fn()
                ev[i][1].record()
            torch.cuda.synchronize()
            return [s.elapsed_time(e) for s, e in ev]
        out = []
        for i in range(reps):
            if self.flush is not None:
                self.flush.fill_(i & 0xFF)
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    def measure(self, fn):
        self._times(fn, 1)
        est = self._times(fn, 1)[0]
        reps = self.max_reps if est <= 0 else math.ceil(self.budget_s * 1e3 / est)
        reps = max(self.min_reps, min(self.max_reps, reps))
        t = sorted(self._times(fn, reps))
        med = t[reps // 2] if reps % 2 else 0.5 * (t[reps // 2 - 1] + t[reps // 2])
        return {"ms": med, "ms_min": t[0], "ms_max": t[-1], "reps": reps}


def best_of(variants, timings):
    """variants: {name: ms or error string}; timings: {name: timing dict}."""
    ok = {k: v for k, v in timings.items()}
    if not ok:
        return {"error": "no variant ran", "variants": variants}
    name = min(ok, key=lambda k: ok[k]["ms"])
    r = dict(ok[name])
    r["impl"] = name
    r["variants"] = variants
    return r


def run_variants(timer, fns):
    """fns: list of (name, context factory, fn factory); the factory builds
    the callable inside the context (so a refused kernel fails there)."""
    variants, timings = {}, {}
    for name, ctx, make in fns:
        try:
            with ctx():
                fn = make()
                fn()
                t = timer.measure(fn)
            variants[name] = t["ms"]
            timings[name] = t
        except Exception as e:  # a backend that cannot run this shape
            variants[name] = "error: " + (str(e).strip().splitlines() or [repr(e)])[0][:300]
    return best_of(variants, timings)


def sdpa_backends(torch, dev):
    """[(name, context factory)] of the SDPA backends to try."""
    if dev != "cuda":
        return [("default", contextlib.nullcontext)]
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return [("default", contextlib.nullcontext)]
    out = []
    for name, attr in (("flash", "FLASH_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION")):
        be = getattr(SDPBackend, attr, None)
        if be is not None:
            out.append((name, lambda be=be: sdpa_kernel([be])))
    return out


def op_attention(torch, F, c, dev, dt, timer, bwd):
    B, T, Hq, Hkv, D = (int(c[k]) for k in ("B", "T", "Hq", "Hkv", "D"))
    g = torch.Generator(device=dev).manual_seed(1)
    # (B, T, H, D) buffers, as the model holds them; SDPA reads (B, H, T, D) views
    q = torch.randn(B, T, Hq, D, device=dev, dtype=dt, generator=g).transpose(1, 2)
    k = torch.randn(B, T, Hkv, D, device=dev, dtype=dt, generator=g).transpose(1, 2)
    v = torch.randn(B, T, Hkv, D, device=dev, dtype=dt, generator=g).transpose(1, 2)
    dout = torch.randn(B, Hq, T, D, device=dev, dtype=dt, generator=g)
    if bwd:
        q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)
    rep = Hq // Hkv

    def attn_gqa():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def attn_rep():  # repeat_kv inside the call, as transformers does
        return F.scaled_dot_product_attention(
            q, k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1), is_causal=True)

    fns = []
    for name, ctx in sdpa_backends(torch, dev):
        for suffix, attn in (("", attn_gqa), ("+repeat_kv", attn_rep)):
            if bwd:
                def make(attn=attn):
                    with torch.enable_grad():
                        out = attn()
                    return lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
            else:
                def make(attn=attn):
                    return lambda: attn()
            fns.append(("sdpa-" + name + suffix, ctx, make))
    # try the GQA call first; the repeat_kv variant of a backend only if GQA failed there
    variants, timings = {}, {}
    for name, ctx, make in fns:
        if name.endswith("+repeat_kv") and name[: -len("+repeat_kv")] in timings:
            continue
        r = run_variants(timer, [(name, ctx, make)])
        variants.update(r["variants"])
        if "ms" in r:
            timings[name] = {k: r[k] for k in ("ms", "ms_min", "ms_max", "reps")}
    return best_of(variants, timings)


def rms_norm_fn(torch, F):
    if hasattr(F, "rms_norm"):
        return "F.rms_norm", lambda x, w, eps: F.rms_norm(x, (x.shape[-1],), w, eps)

    def manual(x, w, eps):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w
    return "manual", manual


def op_rmsnorm(torch, F, c, dev, dt, timer, bwd, compile_):
    R, C = int(c["R"]), int(c["C"])
    g = torch.Generator(device=dev).manual_seed(2)
    x = torch.randn(R, C, device=dev, dtype=dt, generator=g)
    w = torch.randn(C, device=dev, dtype=dt, generator=g)
    dout = torch.randn(R, C, device=dev, dtype=dt, generator=g)
    name, rn = rms_norm_fn(torch, F)
    impls = [(name, rn)]
    if compile_:
        impls.append(("compiled " + name, torch.compile(rn, dynamic=False)))
    fns = []
    for nm, f in impls:
        if bwd:
            def make(f=f):
                xr, wr = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
                with torch.enable_grad():
                    y = f(xr, wr, 1e-5)
                return lambda: torch.autograd.grad(y, (xr, wr), dout, retain_graph=True)
        else:
            def make(f=f):
                return lambda: f(x, w, 1e-5)
        fns.append((nm, contextlib.nullcontext, make))
    return run_variants(timer, fns)


def op_add_rmsnorm(torch, F, c, dev, dt, timer, compile_):
    """the residual add followed by the norm, as a model runs them: h = x + r; rms_norm(h)"""
    R, C = int(c["R"]), int(c["C"])
    g = torch.Generator(device=dev).manual_seed(7)
    x = torch.randn(R, C, device=dev, dtype=dt, generator=g)
    r = torch.randn(R, C, device=dev, dtype=dt, generator=g)
    w = torch.randn(C, device=dev, dtype=dt, generator=g)
    name, rn = rms_norm_fn(torch, F)

    def add_norm(x, r, w):
        h = x + r
        return h, rn(h, w, 1e-5)
    impls = [("x + r; " + name, add_norm)]
    if compile_:
        impls.append(("compiled x + r; " + name, torch.compile(add_norm, dynamic=False)))
    return run_variants(timer, [(nm, contextlib.nullcontext, lambda f=f: lambda: f(x, r, w)) for nm, f in impls])


def op_swiglu(torch, F, c, dev, dt, timer):
    N, Fd = int(c["N"]), int(c["F"])
    g = torch.Generator(device=dev).manual_seed(3)
    gate = torch.randn(N, Fd, device=dev, dtype=dt, generator=g) * 2
    up = torch.randn(N, Fd, device=dev, dtype=dt, generator=g)
    return run_variants(timer, [("F.silu(gate)*up", contextlib.nullcontext, lambda: lambda: F.silu(gate) * up)])


def op_embedding(torch, F, c, dev, dt, timer):
    N, C, V = int(c["N"]), int(c["C"]), int(c["V"])
    g = torch.Generator(device=dev).manual_seed(4)
    table = torch.randn(V, C, device=dev, dtype=dt, generator=g)
    ids = torch.randint(0, V, (N,), device=dev, generator=g)
    return run_variants(timer, [("F.embedding", contextlib.nullcontext, lambda: lambda: F.embedding(ids, table))])


def op_cross_entropy(torch, F, c, dev, dt, timer):
    N, V = int(c["N"]), int(c["V"])
    g = torch.Generator(device=dev).manual_seed(5)
    logits = (torch.randn(N, V, device=dev, dtype=dt, generator=g) * 2).requires_grad_(True)
    tg = torch.randint(0, V, (N,), device=dev, generator=g)

    def make():
        def step():
            with torch.enable_grad():
                loss = F.cross_entropy(logits, tg, reduction="sum")
                return torch.autograd.grad(loss, (logits,))
        return step
    return run_variants(timer, [("F.cross_entropy fwd+grad", contextlib.nullcontext, make)])


def op_adamw(torch, c, dev, timer):
    sizes = [int(s) for s in c["sizes"]]
    g = torch.Generator(device=dev).manual_seed(6)
    params = []
    for n in sizes:
        p = torch.nn.Parameter(torch.randn(n, device=dev, dtype=torch.float32, generator=g) * 0.02)
        p.grad = torch.randn(n, device=dev, dtype=torch.float32, generator=g) * 1e-3
        params.append(p)
    fns = []
    for kind in ("fused", "foreach"):
        def make(kind=kind):
            opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                                    **{kind: True})
            return lambda: opt.step()
        fns.append(("AdamW(%s) f32" % kind, contextlib.nullcontext, make))
    # the fused one is the baseline; foreach only where fused cannot run
    r = run_variants(timer, fns[:1])
    if "ms" not in r:
        r2 = run_variants(timer, fns[1:])
        r2["variants"].update(r["variants"])
        r = r2
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", required=True, help="cases JSON written by bench_kernels")
    ap.add_argument("--out", required=True, help="where to write the results JSON")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd RMSNorm")
    args = ap.parse_args()
    with open(args.cases) as f:
        spec = json.load(f)
    import torch
    import torch.nn.functional as F

    dev = spec.get("device", "cuda")
    if dev == "cuda" and not torch.cuda.is_available():
        log("torch sees no CUDA device")
        return 1
    if dev not in ("cuda", "cpu"):
        log("unknown device %r" % dev)
        return 2
    dt = torch.bfloat16 if spec.get("dtype") == "bf16" else torch.float32
    compile_ = args.compile or os.environ.get("LT_TORCH_COMPILE") == "1"
    timer = Timer(torch, dev, float(spec.get("budget_s", 0.25)), int(spec.get("min_reps", 5)),
                  int(spec.get("max_reps", 100)), int(spec.get("flush_bytes", 0)))
    results = {}
    t_all = time.perf_counter()
    deadline = float(spec.get("max_seconds", 0))  # 0: none
    for c in spec["cases"]:
        op, t0 = c["op"], time.perf_counter()
        if deadline and t0 - t_all > deadline:
            results[c["id"]] = {"error": "skipped: the %.0f s limit of the PyTorch baselines ran out" % deadline}
            continue
        try:
            with torch.no_grad():
                if op in ("attention_fwd", "attention_bwd"):
                    r = op_attention(torch, F, c, dev, dt, timer, op == "attention_bwd")
                elif op in ("rmsnorm_fwd", "rmsnorm_bwd"):
                    r = op_rmsnorm(torch, F, c, dev, dt, timer, op == "rmsnorm_bwd", compile_)
                elif op == "add_rmsnorm_fwd":
                    r = op_add_rmsnorm(torch, F, c, dev, dt, timer, compile_)
                elif op == "swiglu_fwd":
                    r = op_swiglu(torch, F, c, dev, dt, timer)
                elif op == "embedding_fwd":
                    r = op_embedding(torch, F, c, dev, dt, timer)
                elif op == "cross_entropy":
                    r = op_cross_entropy(torch, F, c, dev, dt, timer)
                elif op == "adamw":
                    r = op_adamw(torch, c, dev, timer)
                else:
                    r = {"error": "no PyTorch baseline for op %r" % op}
        except Exception as e:  # out of memory, an op torch lacks: report, go on
            r = {"error": (str(e).strip().splitlines() or [repr(e)])[0][:300]}
        if dev == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        results[c["id"]] = r
        log("%-60s %s (%.1f s)" % (c["id"], "%.4f ms %s" % (r["ms"], r["impl"]) if "ms" in r else r.get("error"),
                                   time.perf_counter() - t0))
    out = {
        "torch_version": torch.__version__,
        "device_name": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
        "dtype": str(dt).replace("torch.", ""),
        "seconds": time.perf_counter() - t_all,
        "results": results,
    }
    tmp = "%s.tmp.%d" % (args.out, os.getpid())
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
