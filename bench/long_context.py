#!/usr/bin/env python3
"""The long-context table of docs/benchmarks.md: decode speed deep into the context (SmolLM2-135M at
1k, 4k and 8k tokens, Gemma 3 270M at 4k, 16k and 32k) for leanlm's KV codecs against llama.cpp's
f16, q8_0 and q4_0 caches (flash attention on and off for f16; llama.cpp's quantized caches need
it on), each with its bytes-per-step ceiling and the share of it reached; and prefill of a 4k prompt.

    .venv/bin/python bench/long_context.py [--reps 1] [--threads 2] [--out docs/benchmarks.md]

Needs the models (`leanlm pull smollm2-135m`; Gemma is the default model) and llama.cpp's
llama-bench built by bench/build_llamacpp.sh. leanlm fills one sequence to the first depth and
decodes 64 tokens at each depth in turn (`leanlm bench --fill-once`); llama-bench fills a fresh
context for each depth. The ceiling is the read bandwidth that `leanlm bench --bandwidth` measures
on the same threads divided by the bytes one decode step reads: the weights plus the KV cache the
step attends to (all of it, except that Gemma's sliding-window layers read only their last 512
tokens), at each cache type's bytes per element. With --reps above 1 the engines alternate and
medians are reported."""
import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LEANLM = ROOT / "build" / "leanlm"
LLAMA_BENCH = ROOT / "build-llamacpp" / "bin" / "llama-bench"
N_GEN = 64
PROMPT = 4096

# KV geometry per model: layers that attend to the whole context, sliding-window layers and their
# window, KV heads and head size (what one decode step reads from the cache).
MODELS = {
    "smollm2-135m": {"file": "smollm2-135m-instruct-q4_1.gguf", "depths": [1000, 4000, 8000],
                     "full": 30, "swa": 0, "window": 0, "kv_heads": 3, "head": 64},
    "gemma3-270m": {"file": "gemma-3-270m-q4_k_m.gguf", "depths": [4000, 16000, 32000],
                    "full": 3, "swa": 15, "window": 512, "kv_heads": 1, "head": 256},
}
# Bytes per stored K or V element, codes and scales together (KIVI: blocks of 32 tokens).
BYTES_PER_ELEM = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "kivi4": 0.625, "kivi2": 0.375}
KIVI_WINDOW = 128 + 16  # KIVI's fp16 recent tokens (r=128) plus a half-filled block on average
LEANLM_CODECS = ["f16", "q8_0", "q4_0", "kivi4", "kivi2"]
LLAMA_CACHES = [("f16", 1), ("f16", 0), ("q8_0", 1), ("q4_0", 1)]


def kv_read_bytes(m, depth, cache):
    """KV bytes one decode step at this depth reads."""
    per_token_layer = m["kv_heads"] * m["head"] * 2  # elements of K and V
    tokens = m["full"] * depth + m["swa"] * min(depth, m["window"])
    b = tokens * per_token_layer * BYTES_PER_ELEM[cache]
    if cache.startswith("kivi"):  # the newest tokens are still fp16
        recent = m["full"] * min(depth, KIVI_WINDOW) + m["swa"] * min(depth, m["window"], KIVI_WINDOW)
        b += recent * per_token_layer * (2.0 - BYTES_PER_ELEM[cache])
    return b


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out)


def leanlm_decode(model, m, codec, threads):
    ctx = max(m["depths"]) + 4 * N_GEN + 256
    cmd = [str(LEANLM), "bench", "--json", "--bandwidth", "--fill-once", "-m", str(model), "-t", str(threads),
           "-r", "1", "-p", "0", "-n", str(N_GEN), "-c", str(ctx), "--kv-codec", codec, "-d"] + \
          [str(d) for d in m["depths"]]
    j = run_json(cmd)
    return j, {r["depth"]: r["tokens_per_second"] for r in j["results"]}


def leanlm_prefill(model, codec, threads):
    cmd = [str(LEANLM), "bench", "--json", "-m", str(model), "-t", str(threads), "-r", "1", "-p", str(PROMPT),
           "-n", "0", "-c", str(PROMPT), "--kv-codec", codec]
    return run_json(cmd)["results"][0]["tokens_per_second"]


def llama_env():
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(LLAMA_BENCH.parent) + ":" + env.get("LD_LIBRARY_PATH", "")
    return env


def llama_decode(model, m, cache, fa, threads):
    cmd = [str(LLAMA_BENCH), "-m", str(model), "-t", str(threads), "-r", "1", "-p", "0", "-n", str(N_GEN),
           "-d", ",".join(str(d) for d in m["depths"]), "-fa", str(fa), "-ctk", cache, "-ctv", cache, "-o", "json"]
    return {r["n_depth"]: r["avg_ts"] for r in run_json(cmd, llama_env())}


def llama_prefill(model, cache, fa, threads):
    cmd = [str(LLAMA_BENCH), "-m", str(model), "-t", str(threads), "-r", "1", "-p", str(PROMPT), "-n", "0",
           "-fa", str(fa), "-ctk", cache, "-ctv", cache, "-o", "json"]
    return run_json(cmd, llama_env())[0]["avg_ts"]


def cpu_name():
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def nearest(depths, want):
    """leanlm's --fill-once depths grow by the tokens decoded before: the measured depth nearest want."""
    return min(depths, key=lambda d: abs(d - want))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "long_context.json"))
    a = ap.parse_args()
    if not LLAMA_BENCH.exists():
        sys.exit(f"{LLAMA_BENCH} is missing: run bench/build_llamacpp.sh")
    raw = {"threads": a.threads, "reps": a.reps, "cpu": cpu_name(), "models": {}}
    for name in a.models.split(","):
        m = MODELS[name]
        model = ROOT / "models" / m["file"]
        if not model.exists():
            sys.exit(f"{model} is missing: run build/leanlm pull {name}")
        res = {"decode": {}, "prefill": {}, "bandwidth": [], "weights": 0, "isa": ""}
        for rep in range(a.reps):
            for codec in LEANLM_CODECS:
                j, tps = leanlm_decode(model, m, codec, a.threads)
                res["bandwidth"].append(j["read_bandwidth_gbs"])
                res["weights"], res["isa"] = j["weight_bytes_per_token"], j["isa"]
                for want in m["depths"]:
                    d = nearest(list(tps), want)
                    res["decode"].setdefault(f"leanlm {codec}", {}).setdefault(str(want), []).append(tps[d])
                res["prefill"].setdefault(f"leanlm {codec}", []).append(leanlm_prefill(model, codec, a.threads))
                print(f"{name} leanlm {codec}: {tps}", file=sys.stderr)
            for cache, fa in LLAMA_CACHES:
                key = f"llama.cpp {cache} FA {'on' if fa else 'off'}"
                tps = llama_decode(model, m, cache, fa, a.threads)
                for want in m["depths"]:
                    res["decode"].setdefault(key, {}).setdefault(str(want), []).append(tps[want])
                res["prefill"].setdefault(key, []).append(llama_prefill(model, cache, fa, a.threads))
                print(f"{name} {key}: {tps}", file=sys.stderr)
        raw["models"][name] = res
    pathlib.Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(a.json).write_text(json.dumps(raw, indent=1))
    write_doc(a, raw)


def write_doc(a, raw):
    lines = []
    for name, res in raw["models"].items():
        m = MODELS[name]
        bw = statistics.median(res["bandwidth"])
        lines.append(f"\n**{name}** (weights {res['weights'] / 2**20:.0f} MiB per decode step, read bandwidth "
                     f"{bw:.1f} GB/s, leanlm kernels {res['isa']})\n")
        header = "| KV cache | " + " | ".join(f"tok/s @ {d / 1000:g}k (ceiling, share)" for d in m["depths"]) + \
                 f" | vs llama.cpp f16 FA on @ {m['depths'][-1] / 1000:g}k | pp{PROMPT} tok/s |"
        lines.append(header)
        lines.append("|---" * (len(m["depths"]) + 3) + "|")
        base = statistics.median(res["decode"]["llama.cpp f16 FA on"][str(m["depths"][-1])])
        for key, per_depth in res["decode"].items():
            cache = key.split()[1]
            cells = []
            for d in m["depths"]:
                tps = statistics.median(per_depth[str(d)])
                ceiling = bw * 1e9 / (res["weights"] + kv_read_bytes(m, d, cache))
                cells.append(f"{tps:.1f} ({ceiling:.0f}, {100 * tps / ceiling:.0f}%)")
            last = statistics.median(per_depth[str(m["depths"][-1])])
            pp = statistics.median(res["prefill"][key])
            label = f"**{key}**" if key.startswith("leanlm") else key
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {last / base:.2f}x | {pp:.0f} |")
    table = "\n".join(lines)
    print(table)
    doc = pathlib.Path(a.out)
    section = f"""<!-- long-context table -->
## Long-context decode: leanlm's KV codecs against llama.cpp's caches

Made by `bench/long_context.py` on {datetime.date.today()}: {raw['cpu']}, {raw['threads']} threads,
{raw['reps']} run(s) per cell ({'median, engines alternating' if raw['reps'] > 1 else 'one run each'}).
Decode of {N_GEN} tokens at each depth; the ceiling is the read bandwidth measured by `leanlm bench
--bandwidth` divided by the bytes one decode step reads (weights plus the KV cache it attends to, at
each cache type's bytes per element; Gemma's sliding-window layers read only their last 512
tokens), and the share is tok/s over that ceiling. The last columns: decode at the deepest depth
over llama.cpp's f16 cache with flash attention, and prefill of a {PROMPT}-token prompt. llama.cpp
is llama-bench from `bench/build_llamacpp.sh`, native build, its default attention rotation for
quantized caches.
{table}

Reproduce:

    scripts/setup.sh
    build/leanlm pull smollm2-135m
    bench/build_llamacpp.sh
    .venv/bin/python bench/long_context.py --reps {raw['reps']} --threads {raw['threads']}

Per-kernel figures (GB/s of cache read by the score and accumulate kernels of each codec at 1k-32k
slots, head sizes 64 and 256, against the read bandwidth the same binary measures):
`build/bench/bench_kv` (`LEANLM_ISA=avx2` for the AVX2 kernels).
<!-- end of long-context table -->
"""
    text = doc.read_text() if doc.exists() else ""
    start, end = "<!-- long-context table -->", "<!-- end of long-context table -->\n"
    if start in text and end in text:
        text = text.split(start, 1)[0] + section + text.split(end, 1)[1]
    else:  # after the weight-kernel table's generated part, which bench/benchmarks.py rewrites
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)
    print(f"wrote {doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
