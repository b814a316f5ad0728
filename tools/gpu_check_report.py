#!/usr/bin/env python3
"""gpu_check_report.py -- the results file of tools/gpu-check.sh.

Reads the logs folder that gpu-check.sh fills phase by phase and writes one
JSON file (schema "luxtrain-gpu-check/2", described in docs/cuda.md), then
prints a short summary. Standard library only (runs on the GPU image's
python3 and on the test virtual environment alike). Called after every phase,
so it must cope with logs of phases that have not run yet.

  gpu_check_report.py --logs DIR --out FILE.json --meta key=value...
  gpu_check_report.py --verify FILE.json      (exit 1 unless well-formed)
"""
import glob
import json
import os
import re
import sys

SCHEMA = "luxtrain-gpu-check/2"
PHASES = ("preflight", "deps", "configure", "build", "linkcheck", "gpu-tests", "zero", "bench", "tests")


def read(logs, name):
    try:
        with open(os.path.join(logs, name), errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def strip_prefix(line):
    # ctest -V prefixes a test's output lines with "<test number>: "
    return re.sub(r"^\d+: ", "", line)


def parse_ctest(text):
    tests = []
    for m in re.finditer(r"Test\s+#\d+:\s+(\S+)\s+\.+\s*(\*\*\*)?\s*([A-Za-z][A-Za-z ]*?)\s+([\d.]+) sec", text):
        tests.append({"name": m.group(1), "status": m.group(3).strip(), "seconds": float(m.group(4))})
    return tests


def parse_ops(text):
    ops = []
    for raw in text.splitlines():
        line = strip_prefix(raw)
        m = re.match(r"\s*ok (.*?)\s+norm err (\S+)\s+max abs (\S+)", line)
        if m:
            ops.append({"check": m.group(1), "ok": True, "norm_err": float(m.group(2)), "max_abs": float(m.group(3))})
            continue
        m = re.match(r"FAIL (.*?): normalized error (\S+) \(tol (\S+)\)", line)
        if m:
            ops.append({"check": m.group(1), "ok": False, "norm_err": float(m.group(2)), "tol": float(m.group(3))})
        elif line.startswith("FAIL"):
            ops.append({"check": line, "ok": False})
    return ops


def parse_bench(text):
    runs, cur = [], None
    for line in text.splitlines():
        if line.startswith("--- ") and not line.startswith("--- bench:"):
            if cur:
                runs.append(cur)
            cur = {"run": line[4:], "output": []}
        elif cur is not None:
            cur["output"].append(line)
    if cur:
        runs.append(cur)
    for r in runs:
        r["output"] = r["output"][-40:]
    return runs


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def build(logs, meta):
    phases = []
    for line in read(logs, "phases.tsv").splitlines():
        f = line.split("\t")
        if len(f) >= 3:
            phases.append({"name": f[0], "status": f[1], "seconds": int(f[2]),
                           "rc": int(f[3]) if len(f) > 3 and f[3].lstrip("-").isdigit() else None})
    res = {"schema": SCHEMA}
    res.update(meta)
    res["phases"] = phases
    res["preflight"] = read(logs, "preflight.log").splitlines()[:80]
    gpu_log = read(logs, "gpu-tests.log")
    res["gpu_tests"] = parse_ctest(gpu_log)
    res["backend_ops"] = parse_ops(gpu_log)
    res["tests"] = parse_ctest(read(logs, "tests.log"))
    res["zero_check"] = [l[len("zero-check: "):] for l in read(logs, "zero.log").splitlines()
                         if l.startswith("zero-check: ")]
    res["benchmarks"] = parse_bench(read(logs, "bench.log"))
    k = load_json(os.path.join(logs, "bench_kernels.json"))
    if k is not None:
        res["kernels"] = k
    steps = [load_json(p) for p in sorted(glob.glob(os.path.join(logs, "bench_step_*.json")))]
    res["step"] = [s for s in steps if s is not None]
    res["model_reports"] = {os.path.basename(p).split(".")[0]: read(logs, os.path.basename(p)).splitlines()[:200]
                            for p in sorted(glob.glob(os.path.join(logs, "*.report.txt")))}
    return res


def summary(res):
    print("gpu-check results (%s), GPU %s, commit %s" % (res.get("date"), res.get("gpu"), res.get("commit")))
    for p in res["phases"]:
        print("  phase %-10s %-8s %4d s" % (p["name"], p["status"], p["seconds"]))
    for t in res["gpu_tests"] + res["tests"]:
        if t["status"] != "Passed":
            print("  test  %-34s %s" % (t["name"], t["status"]))
    for z in res.get("zero_check", []):
        print("  zero  %s" % z)
    n_ok = sum(1 for t in res["gpu_tests"] + res["tests"] if t["status"] == "Passed")
    print("  tests passed: %d of %d reported" % (n_ok, len(res["gpu_tests"]) + len(res["tests"])))
    ops = res["backend_ops"]
    if ops:
        bad = [o for o in ops if not o["ok"]]
        worst = max((o for o in ops if o["ok"]), key=lambda o: o["norm_err"], default=None)
        print("  backend_ops: %d comparisons, %d failed%s" % (
            len(ops), len(bad), ", largest passing error %.3g (%s)" % (worst["norm_err"], worst["check"]) if worst else ""))
        for o in bad[:15]:
            print("    FAIL", o["check"], o.get("norm_err", ""))
    for s in res["step"]:
        c, x, m = s.get("config", {}), s.get("result", {}), s.get("memory", {})
        print("  step %-14s %-5s B %-3s T %-5s %9.0f tokens/s  MFU %5.1f%%  peak %.1f GB" % (
            c.get("shape"), c.get("mode"), c.get("micro_batch"), c.get("seq_len"),
            x.get("tokens_per_s", 0), x.get("mfu_pct", 0), m.get("peak_bytes", 0) / 1e9))


def verify(path):
    res = load_json(path)
    problems = []
    if not isinstance(res, dict):
        problems.append("not a JSON object")
    else:
        if res.get("schema") != SCHEMA:
            problems.append("schema is %r, expected %r" % (res.get("schema"), SCHEMA))
        for k in ("date", "gpu", "commit", "phases", "gpu_tests", "tests", "backend_ops", "benchmarks", "step"):
            if k not in res:
                problems.append("missing key %r" % k)
        names = [p.get("name") for p in res.get("phases", [])]
        for n in names:
            if n not in PHASES:
                problems.append("unknown phase %r" % n)
        if "preflight" not in names:
            problems.append("no preflight phase recorded")
    for p in problems:
        print("  %s: %s" % (path, p))
    return not problems


def main(argv):
    if len(argv) == 2 and argv[0] == "--verify":
        return 0 if verify(argv[1]) else 1
    logs = out = None
    meta = {}
    i = 0
    while i < len(argv):
        if argv[i] == "--logs":
            logs = argv[i + 1]; i += 2
        elif argv[i] == "--out":
            out = argv[i + 1]; i += 2
        elif argv[i] == "--meta":
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                k, _, v = argv[i].partition("=")
                meta[k] = int(v) if v.isdigit() and k.endswith("_s") else v
                i += 1
        else:
            print("gpu_check_report: unknown argument %r" % argv[i], file=sys.stderr)
            return 2
    if not logs or not out:
        print(__doc__, file=sys.stderr)
        return 2
    res = build(logs, meta)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=1)
    os.replace(tmp, out)
    summary(res)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
