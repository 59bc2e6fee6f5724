#!/usr/bin/env python3
"""The weight-kernel benchmark table of docs/benchmarks.md: tg128 and pp512 of the three known models,
leanlm against llama.cpp on the same file and threads, natively and with AVX2 forced, each decode
figure with its bytes-per-step ceiling and the share of it reached.

    .venv/bin/python bench/benchmarks.py [--reps 3] [--threads 2] [--out docs/benchmarks.md]

Needs the models (`leanlm pull NAME`) and llama.cpp's llama-bench built twice by
bench/build_llamacpp.sh: natively (build-llamacpp/) and for AVX2 only (build-llamacpp-avx2/), the
counterpart of LEANLM_ISA=avx2. The engines alternate, each measurement in a fresh process (one
warm-up run, then one timed run each); medians are reported. The ceiling is the read bandwidth that
`leanlm bench --bandwidth` measures on the same threads divided by the weight bytes of one decode
step (KV bytes at depth 0 are negligible)."""
import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LEANLM = ROOT / "build" / "leanlm"
LLAMA_BENCH = {"native": ROOT / "build-llamacpp" / "bin" / "llama-bench",
               "avx2": ROOT / "build-llamacpp-avx2" / "bin" / "llama-bench"}
MODELS = [("gemma3-270m", "gemma-3-270m-q4_k_m.gguf"), ("smollm2-135m", "smollm2-135m-instruct-q4_1.gguf"),
          ("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")]


def leanlm_run(model, isa, threads, mode, n, bandwidth=False):
    env = dict(os.environ)
    if isa == "avx2":
        env["LEANLM_ISA"] = "avx2"
    cmd = [str(LEANLM), "bench", "--json", "-m", str(model), "-t", str(threads), "-r", "1",
           "-p", str(n if mode == "pp" else 0), "-n", str(n if mode == "tg" else 0)]
    if bandwidth:
        cmd.append("--bandwidth")
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
    return out


def llama_run(model, isa, threads, mode, n):
    # llama-bench's own warm-up is off; of two repetitions the first warms up, as leanlm's does.
    cmd = [str(LLAMA_BENCH[isa]), "-m", str(model), "-t", str(threads), "-r", "2", "--no-warmup", "-fa", "1",
           "-o", "json", "-p", str(n if mode == "pp" else 0), "-n", str(n if mode == "tg" else 0)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    samples = json.loads(out)[0]["samples_ts"]
    return samples[-1]


def cpu_name():
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--isas", default="native,avx2")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "benchmarks.json"))
    a = ap.parse_args()
    for isa in a.isas.split(","):
        if not LLAMA_BENCH[isa].exists():
            sys.exit(f"{LLAMA_BENCH[isa]} is missing: run bench/build_llamacpp.sh {isa}")
    rows, raw = [], []
    for name, file in MODELS:
        model = ROOT / "models" / file
        if not model.exists():
            sys.exit(f"{model} is missing: run build/leanlm pull {name}")
        for isa in a.isas.split(","):
            res = {"model": name, "isa": isa}
            for mode, n in (("tg", 128), ("pp", 512)):
                ours, theirs = [], []
                for _ in range(a.reps):  # alternate so that drift hits both engines
                    ours.append(leanlm_run(model, isa, a.threads, mode, n)["results"][0]["tokens_per_second"])
                    theirs.append(llama_run(model, isa, a.threads, mode, n))
                res[mode] = {"leanlm": ours, "llama.cpp": theirs}
                print(f"{name} {isa} {mode}{n}: leanlm {statistics.median(ours):.1f}, "
                      f"llama.cpp {statistics.median(theirs):.1f}", file=sys.stderr)
            j = leanlm_run(model, isa, a.threads, "tg", 16, bandwidth=True)
            res["kernels"] = j["isa"]
            res["read_bandwidth_gbs"] = j["read_bandwidth_gbs"]
            res["weight_bytes_per_token"] = j["weight_bytes_per_token"]
            raw.append(res)
    pathlib.Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(a.json).write_text(json.dumps(raw, indent=1))

    lines = []
    lines.append("| model (weights per decode step) | kernels | tg128 leanlm | tg128 llama.cpp | ratio | "
                 "ceiling tok/s | leanlm / llama.cpp share | pp512 leanlm | pp512 llama.cpp | ratio |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in raw:
        tl, tc = statistics.median(r["tg"]["leanlm"]), statistics.median(r["tg"]["llama.cpp"])
        pl, pc = statistics.median(r["pp"]["leanlm"]), statistics.median(r["pp"]["llama.cpp"])
        ceiling = r["read_bandwidth_gbs"] * 1e9 / r["weight_bytes_per_token"]
        label = "native" if r["isa"] == "native" else "AVX2 forced"
        lines.append(f"| {r['model']} ({r['weight_bytes_per_token'] / 2**20:.0f} MiB) | {label} ({r['kernels']}) | "
                     f"{tl:.1f} | {tc:.1f} | {tl / tc:.2f}x | {ceiling:.1f} ({r['read_bandwidth_gbs']:.1f} GB/s) | "
                     f"{100 * tl / ceiling:.0f}% / {100 * tc / ceiling:.0f}% | {pl:.1f} | {pc:.1f} | {pl / pc:.2f}x |")
    table = "\n".join(lines)
    print(table)
    doc = pathlib.Path(a.out)
    header = f"""# Benchmarks: weight kernels, leanlm against llama.cpp

Made by `bench/benchmarks.py` on {datetime.date.today()}: {cpu_name()}, {a.threads} threads, median of
{a.reps} alternating runs per cell (each a fresh process: one warm-up run, one timed run). llama.cpp is
llama-bench with flash attention, built by `bench/build_llamacpp.sh` from the sources llama-cpp-python
ships: natively, and for AVX2 only (no AVX-512, no VNNI) for the rows where leanlm runs with
`LEANLM_ISA=avx2`. The ceiling is the read bandwidth measured by `leanlm bench --bandwidth` on the same
threads divided by the weight bytes one decode step reads; the share is tg128 over that ceiling.

{table}

Reproduce:

    scripts/setup.sh
    build/leanlm pull smollm2-135m && build/leanlm pull qwen2.5-coder-1.5b
    bench/build_llamacpp.sh && bench/build_llamacpp.sh avx2
    .venv/bin/python bench/benchmarks.py --reps {a.reps} --threads {a.threads}

Per-kernel figures (GB/s of weights at each model's matrix shapes, per ISA and thread count, against
the read bandwidth the same binary measures): `build/bench/bench_gemv`.
"""
    marker = "<!-- end of generated part -->"
    rest = ""
    if doc.exists() and marker in doc.read_text():
        rest = doc.read_text().split(marker, 1)[1]
    doc.write_text(header + "\n" + marker + rest)
    print(f"wrote {doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
