#!/usr/bin/env python3
"""leanlm vs llama.cpp on the same GGUF file and thread count.

Runs the two engines alternately, each measurement in a fresh process, and prints a Markdown table of
medians with ratios: generation tok/s at the given depths, prompt tok/s for a 512-token prompt, and
peak RSS. Also reports decode as a fraction of the bandwidth ceiling (weight bytes read per token
divided by the measured read bandwidth).

    .venv/bin/python bench/compare_llamacpp.py [--model M] [--threads 2] [--depths 0,4096,16384] [--reps 5]

Needs scripts/setup.sh --reference: llama.cpp is timed with its own llama-bench (built from the
sources llama-cpp-python ships) when build-llamacpp/bin/llama-bench exists, else through
llama-cpp-python (which adds a little Python overhead per generated token).
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

LLAMA_SNIPPET = r"""
import json, random, sys, time, resource
from llama_cpp import Llama
model, threads, mode, n, depth = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
llm = Llama(model, n_ctx=depth + n + 8, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
            verbose=False)
vocab = llm.n_vocab()
rng = random.Random(1234)
if depth:
    llm.eval([rng.randrange(vocab) for _ in range(depth)])
if mode == "pp":
    toks = [rng.randrange(vocab) for _ in range(n)]
    t0 = time.perf_counter(); llm.eval(toks); dt = time.perf_counter() - t0
else:
    tok = rng.randrange(vocab)
    t0 = time.perf_counter()
    for _ in range(n):
        llm.eval([tok]); tok = rng.randrange(vocab)
    dt = time.perf_counter() - t0
print(json.dumps({"tps": n / dt, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


LLAMA_BENCH = ROOT / "build-llamacpp" / "bin" / "llama-bench"


def run_measured(cmd):
    """Runs cmd (small output); returns (stdout, peak RSS in bytes of that process alone)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.stdout.read(), p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit(f"{cmd[0]} failed: {err.strip()[-500:]}")
    return out, usage.ru_maxrss * 1024


def run_leanlm(a, mode, n, depth):
    cmd = [str(ROOT / "build" / "leanlm"), "bench", "--json", "-m", a.model, "-t", str(a.threads), "-r", "1",
           "-d", str(depth), "-p", str(n if mode == "pp" else 0), "-n", str(n if mode == "tg" else 0)]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {"tps": out["results"][0]["tokens_per_second"], "rss": out["peak_rss_bytes"],
            "wbytes": out["weight_bytes_per_token"]}


def run_llama(a, mode, n, depth):
    if LLAMA_BENCH.exists():
        # One warm-up and one timed repetition, like `leanlm bench -r 1`: llama-bench's own warm-up
        # generates a single token (on an empty cache), so it is switched off and the first of two
        # full repetitions serves as the warm-up instead, as leanlm's first repetition does.
        cmd = [str(LLAMA_BENCH), "-m", a.model, "-t", str(a.threads), "-r", "2", "--no-warmup", "-d", str(depth),
               "-o", "json", "-p", str(n if mode == "pp" else 0), "-n", str(n if mode == "tg" else 0)]
        out, rss = run_measured(cmd)
        samples = json.loads(out)[0]["samples_ts"]
        if len(samples) != 2:
            sys.exit(f"llama-bench returned {len(samples)} samples, expected 2")
        return {"tps": samples[1], "rss": rss}
    cmd = [sys.executable, "-c", LLAMA_SNIPPET, a.model, str(a.threads), mode, str(n), str(depth)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def read_bandwidth_gbs(threads):
    """Read bandwidth with `threads` threads summing disjoint slices of a 1 GiB buffer (numpy)."""
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor
    buf = np.ones(1 << 28, dtype=np.float32)
    parts = np.array_split(buf, threads)
    best = 0.0
    with ThreadPoolExecutor(threads) as ex:
        for _ in range(5):
            t0 = time.perf_counter()
            list(ex.map(np.sum, parts))
            best = max(best, buf.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depths", default="0,4096,16384")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--no-pp", action="store_true", help="skip the pp512 test")
    a = ap.parse_args()
    tests = ([("pp", 512, 0)] if not a.no_pp else []) + [("tg", 128, int(d)) for d in a.depths.split(",")]
    rows, raw = [], {}
    wbytes = None
    for mode, n, depth in tests:
        ours, theirs = [], []
        for _ in range(a.reps):  # alternate so drift hits both
            r = run_leanlm(a, mode, n, depth)
            wbytes = r["wbytes"]
            ours.append(r)
            theirs.append(run_llama(a, mode, n, depth))
        name = f"{mode}{n}" + (f" @ d{depth}" if depth else "")
        mo = statistics.median(x["tps"] for x in ours)
        mt = statistics.median(x["tps"] for x in theirs)
        ro = max(x["rss"] for x in ours) / 2**20
        rt = max(x["rss"] for x in theirs) / 2**20
        rows.append((name, mo, mt, mo / mt, ro, rt))
        raw[name] = {"leanlm": ours, "llama.cpp": theirs}
        print(f"{name}: leanlm {mo:.1f}  llama.cpp {mt:.1f}", file=sys.stderr)
    bw = read_bandwidth_gbs(a.threads)
    who = "llama-bench" if LLAMA_BENCH.exists() else "llama-cpp-python"
    print(f"model {pathlib.Path(a.model).name}, {a.threads} threads, median of {a.reps}, llama.cpp timed with {who}\n")
    print("| test | leanlm tok/s | llama.cpp tok/s | ratio | leanlm peak RSS MiB | llama.cpp peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.2f}x | {r[4]:.0f} | {r[5]:.0f} |")
    ceiling = bw * 1e9 / wbytes
    print(f"\nread bandwidth {bw:.1f} GB/s; weights read per token {wbytes / 2**20:.1f} MiB; "
          f"decode ceiling {ceiling:.0f} tok/s (weights only)")
    for r in rows:
        if r[0].startswith("tg"):
            print(f"{r[0]}: leanlm at {100 * r[1] / ceiling:.0f}% of it, llama.cpp at {100 * r[2] / ceiling:.0f}%")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
