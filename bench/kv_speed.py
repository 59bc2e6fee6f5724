#!/usr/bin/env python3
"""Generation speed at long context for each KV codec: leanlm against its own f16 cache and against
llama.cpp's f16, q8_0 and q4_0 KV caches (flash attention on, as llama.cpp needs for a quantized V
cache), same GGUF file and thread count.

Both engines get the same treatment at every depth: one untimed warm-up repetition (a whole tg run of
--n-gen tokens at that depth), then --reps timed repetitions, reported as their median.
  leanlm:    `leanlm bench --fill-once -r REPS`, which always runs one extra repetition first and
             leaves it out of its samples.
  llama.cpp: `llama-bench -r REPS+1 --no-warmup`, and the first of its samples_ts is dropped.
             (llama-bench's own warm-up decodes a single token on an empty cache before the depth is
             filled, so it is switched off and replaced by that first, full repetition.)
What still differs is how the depth is reached: leanlm fills its cache once per configuration (topped
up to each depth in ascending order) and every repetition continues that sequence, so repetition r
(r = 0 being the warm-up) starts r * n_gen tokens deeper, at most 96 tokens (0.6 % at 16k) with the
defaults; llama-bench fills the depth (or restores a saved copy of it, in recent versions) before
every repetition, so each of its repetitions starts at exactly that depth.

Engines and configurations alternate within a round; with several rounds each cell is the median,
over rounds, of the per-round medians.

    .venv/bin/python bench/kv_speed.py [--depths 16384,32768] [--n-gen 32] [--reps 3] [--rounds 1]
        [--codecs f16,q8_0,...] [--llama-types f16,q8_0,q4_0] [--json out.json] [--markdown out.md]

Needs scripts/setup.sh --reference (build-llamacpp/bin/llama-bench) and, for cq-* codecs, a codebook
file (`leanlm calibrate`, default models/cq-codebooks.bin).
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LEANLM = ROOT / "build" / "leanlm"
LLAMA_BENCH = ROOT / "build-llamacpp" / "bin" / "llama-bench"


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {p.stderr.strip()[-800:]}")
    return p.stdout


def leanlm_tg(model, threads, codec, depths, n_gen, reps, books, think):
    cmd = [str(LEANLM), "bench", "-m", model, "-t", str(threads), "-p", "0", "-n", str(n_gen), "-d",
           ",".join(map(str, depths)), "-r", str(reps), "--fill-once", "--json", "--kv-codec", codec]
    if codec.startswith("cq-"):
        cmd += ["--kv-codebooks", books]
    if think:
        cmd += ["--kv-think", str(think)]
    out = json.loads(run(cmd))
    # One result per depth, in ascending order (the measured depth is a little deeper: see --fill-once).
    # `samples` holds the timed repetitions only: leanlm bench drops its warm-up repetition itself.
    res = sorted(out["results"], key=lambda r: r["depth"])
    for r in res:
        if len(r["samples"]) != reps:
            sys.exit(f"leanlm bench returned {len(r['samples'])} samples for {r['test']}, expected {reps}")
    return {d: (statistics.median(r["samples"]), r["kv_bytes"], r["samples"]) for d, r in zip(sorted(depths), res)}


def llama_tg(model, threads, kv_type, depth, n_gen, reps):
    """Median tg tokens/s of llama-bench at one depth: reps + 1 repetitions without llama-bench's own
    warm-up; the first repetition is the warm-up and is dropped, as leanlm bench drops its first."""
    env = dict(os.environ, LD_LIBRARY_PATH=str(LLAMA_BENCH.parent))
    out = run([str(LLAMA_BENCH), "-m", model, "-t", str(threads), "-p", "0", "-n", str(n_gen), "-d", str(depth),
               "-r", str(reps + 1), "--no-warmup", "-fa", "1", "-ctk", kv_type, "-ctv", kv_type, "-o", "json"], env)
    samples = json.loads(out)[0]["samples_ts"]
    if len(samples) != reps + 1:
        sys.exit(f"llama-bench returned {len(samples)} samples, expected {reps + 1}")
    return statistics.median(samples[1:]), samples[1:]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--depths", default="16384,32768")
    ap.add_argument("--n-gen", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3,
                    help="timed repetitions per depth, both engines (after one untimed warm-up repetition)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--codecs", default="f16,q8_0,q4_0,kivi4,kivi2,cq-2c8b,cq-4c8b,cq-8c8b,cq-8c10b,kivi2+think0.5")
    ap.add_argument("--llama-types", default="f16,q8_0,q4_0")
    ap.add_argument("--codebooks", default=str(ROOT / "models" / "cq-codebooks.bin"))
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    a = ap.parse_args()
    depths = [int(x) for x in a.depths.split(",")]
    codecs = a.codecs.split(",")
    ltypes = [t for t in a.llama_types.split(",") if t]
    if ltypes and not LLAMA_BENCH.exists():
        sys.exit("llama-bench not built: run scripts/setup.sh --reference (or pass --llama-types '')")

    if a.reps < 1:
        sys.exit("--reps must be at least 1")

    # Per cell: the per-round medians (what the table summarises) and every timed sample.
    ours = {c: {d: [] for d in depths} for c in codecs}
    ours_samples = {c: {d: [] for d in depths} for c in codecs}
    kvb = {c: {} for c in codecs}
    theirs = {t: {d: [] for d in depths} for t in ltypes}
    theirs_samples = {t: {d: [] for d in depths} for t in ltypes}

    def measure_llama(rnd, t):
        for d in depths:
            print(f"round {rnd + 1}: llama.cpp {t} @ {d}", file=sys.stderr, flush=True)
            tps, samples = llama_tg(a.model, a.threads, t, d, a.n_gen, a.reps)
            theirs[t][d].append(tps)
            theirs_samples[t][d].append(samples)

    for rnd in range(a.rounds):
        for i, c in enumerate(codecs):
            codec, _, think = c.partition("+think")
            print(f"round {rnd + 1}: leanlm {c}", file=sys.stderr, flush=True)
            for d, (tps, b, samples) in leanlm_tg(a.model, a.threads, codec, depths, a.n_gen, a.reps, a.codebooks,
                                                  float(think) if think else 0).items():
                ours[c][d].append(tps)
                ours_samples[c][d].append(samples)
                kvb[c][d] = b
            if i < len(ltypes):  # interleave the engines
                measure_llama(rnd, ltypes[i])
        for t in ltypes[len(codecs):]:
            measure_llama(rnd, t)

    med = lambda v: statistics.median(v) if v else float("nan")
    lines = [f"tg{a.n_gen} tokens/s, {a.threads} threads, {os.path.basename(a.model)}; both engines: one warm-up "
             f"repetition, then the median of {a.reps} timed repetitions per round; median of {a.rounds} round(s)", ""]
    head = "| engine | KV | " + " | ".join(f"tg @ {d // 1024}k | vs leanlm f16 | KV MiB @ {d // 1024}k" for d in depths) + " |"
    lines += [head, "|" + "---|" * (2 + 3 * len(depths))]
    base = {d: med(ours[codecs[0]][d]) for d in depths} if codecs and codecs[0] == "f16" else None
    for c in codecs:
        cells = []
        for d in depths:
            v = med(ours[c][d])
            cells += [f"{v:.2f}", f"{v / base[d]:.2f}x" if base else "-", f"{kvb[c][d] / 2**20:.1f}"]
        lines.append(f"| leanlm | {c} | " + " | ".join(cells) + " |")
    for t in ltypes:
        cells = []
        for d in depths:
            v = med(theirs[t][d])
            cells += [f"{v:.2f}", f"{v / base[d]:.2f}x" if base else "-", "-"]
        lines.append(f"| llama.cpp | {t} (fa) | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        pathlib.Path(a.markdown).write_text(text + "\n")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps({
            "threads": a.threads, "model": a.model, "n_gen": a.n_gen, "depths": depths, "reps": a.reps,
            "policy": "per engine and depth: 1 untimed warm-up repetition, then `reps` timed ones; "
                      "tps = per-round medians, samples = the timed repetitions of each round",
            "leanlm": {c: {str(d): {"tps": ours[c][d], "samples": ours_samples[c][d], "kv_bytes": kvb[c][d]}
                           for d in depths} for c in codecs},
            "llama.cpp": {t: {str(d): {"tps": theirs[t][d], "samples": theirs_samples[t][d]} for d in depths}
                          for t in ltypes}}, indent=1))


if __name__ == "__main__":
    main()
