#!/usr/bin/env python3
"""Many users on one server: `leanlm serve` and llama.cpp's `llama-server` driven identically by the
official openai client's async API, with the same model file, threads and KV bytes.

  .venv/bin/python bench/serve_load.py [-m models/smollm2-135m-instruct-q4_1.gguf] [--clients 1,4,16,64]
      [--tokens 64] [--threads 2] [--servers leanlm:f16,leanlm:kivi4,leanlm:kivi2,llama:f16]
      [--slot-ctx 512] [--rounds 1] [--json out.json]

For each server and each client count N, N clients each stream one completion of --tokens tokens at
once (distinct prompts that produce long text, temperature 0.8, a seed per client). Reported:
aggregate generated tok/s (all tokens / wall time from the first request to the last token), time to
first token and inter-token latency p50/p99 (per client, over the streamed chunks).

Same memory: llama-server gets --parallel = the largest N and a context of N x --slot-ctx tokens
(allocated up front, f16 unless the server is llama:q8_0 / llama:q4_0); its KV size is read from its
log, and leanlm gets that many bytes as --kv-mem. Run nothing else meanwhile (two cores).
"""
import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
import urllib.request

from openai import AsyncOpenAI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLAMA_SERVER = os.path.join(ROOT, "build-llamacpp", "bin", "llama-server")
MODEL_ID = "m"


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def wait_http(port, path, deadline_s=300):
    t0 = time.time()
    while time.time() - t0 < deadline_s:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on port {port} not ready")


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_llama(model, kv_type, threads, parallel, slot_ctx, log):
    port = free_port()
    args = [LLAMA_SERVER, "-m", model, "--port", str(port), "--host", "127.0.0.1", "-t", str(threads),
            "-tb", str(threads), "-c", str(parallel * slot_ctx), "-np", str(parallel), "-fa", "on",
            "--alias", MODEL_ID, "--no-webui", "-lv", "4"]
    if kv_type != "f16":
        args += ["-ctk", kv_type, "-ctv", kv_type]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    wait_http(port, "/health")
    return proc, port


def llama_kv_mib(log_path):
    """The KV cache size llama-server allocated (MiB), from its log."""
    text = open(log_path, errors="replace").read()
    sizes = [float(m) for m in re.findall(r"llama_kv_cache: size =\s*([0-9.]+) MiB", text)]
    if not sizes:
        raise SystemExit("could not read llama-server's KV size from its log: " + log_path)
    return sum(sizes)


def start_leanlm(model, codec, threads, kv_mib, slot_ctx, parallel, log):
    ready = os.path.join(tempfile.mkdtemp(), "ready")
    args = [os.path.join(ROOT, "build", "leanlm"), "serve", "-m", model, "--port", "0", "--model-id", MODEL_ID,
            "-t", str(threads), "-c", str(slot_ctx), "--kv-codec", codec, "--kv-mem", str(int(kv_mib)),
            "--max-running", str(parallel), "--max-waiting", "1024", "--max-connections", str(max(64, parallel + 4)),
            "--ready-file", ready]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    t0 = time.time()
    while not os.path.exists(ready):
        if proc.poll() is not None or time.time() - t0 > 300:
            raise SystemExit("leanlm serve did not start; see " + log.name)
        time.sleep(0.05)
    return proc, int(open(ready).read())


async def one_client(client, i, tokens):
    t0 = time.perf_counter()
    stamps = []
    stream = await client.completions.create(model=MODEL_ID, prompt=f"Chapter {i}. It was a cold morning when",
                                             max_tokens=tokens, temperature=0.8, seed=i, stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            stamps.append(time.perf_counter())
    return t0, stamps


async def load(port, n, tokens):
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=3600)
    t0 = time.perf_counter()
    res = await asyncio.gather(*[one_client(client, i, tokens) for i in range(n)])
    t1 = max(s[-1] for _, s in res if s)
    await client.close()
    n_tok = sum(len(s) for _, s in res)
    ttft = [s[0] - start for start, s in res if s]
    itl = [b - a for _, s in res for a, b in zip(s, s[1:])]
    return {"clients": n, "tokens": n_tok, "tok_s": n_tok / (t1 - t0), "ttft_p50": pct(ttft, 50),
            "ttft_p99": pct(ttft, 99), "itl_p50": pct(itl, 50), "itl_p99": pct(itl, 99)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", default=os.path.join(ROOT, "models", "smollm2-135m-instruct-q4_1.gguf"))
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--servers", default="llama:f16,leanlm:f16,leanlm:kivi4,leanlm:kivi2")
    ap.add_argument("--slot-ctx", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=1, help="repeat every (server, N) run; the median round is kept")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    clients = [int(x) for x in a.clients.split(",")]
    parallel = max(clients)
    logdir = tempfile.mkdtemp(prefix="serve_load_")
    kv_mib = None
    rows = []
    for spec in a.servers.split(","):
        kind, kv = spec.split(":")
        log = open(os.path.join(logdir, spec.replace(":", "_") + ".log"), "w")
        if kind == "llama":
            proc, port = start_llama(a.m, kv, a.threads, parallel, a.slot_ctx, log)
            kv_here = llama_kv_mib(log.name)
            kv_mib = kv_mib or kv_here
        else:
            if kv_mib is None:  # no llama-server run first: the f16 bytes of that context, from leanlm itself
                raise SystemExit("put a llama:... server first in --servers (it sets the KV bytes)")
            proc, port = start_leanlm(a.m, kv, a.threads, kv_mib, a.slot_ctx, parallel, log)
            kv_here = kv_mib
        try:
            asyncio.run(load(port, 2, 8))  # warm-up
            for n in clients:
                runs = sorted((asyncio.run(load(port, n, a.tokens)) for _ in range(a.rounds)), key=lambda r: r["tok_s"])
                r = runs[len(runs) // 2]
                r.update(server=kind, kv=kv, kv_mib=round(kv_here, 1))
                rows.append(r)
                print(f"{kind:6s} {kv:6s} N={n:3d}  {r['tok_s']:7.1f} tok/s  TTFT p50/p99 {r['ttft_p50']:.3f}/"
                      f"{r['ttft_p99']:.3f} s  ITL p50/p99 {r['itl_p50'] * 1000:.0f}/{r['itl_p99'] * 1000:.0f} ms",
                      flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
            log.close()
    print(f"\nModel {os.path.basename(a.m)}, {a.threads} threads, {a.tokens} tokens per client, KV "
          f"{kv_mib:.0f} MiB each (llama-server: {parallel} slots x {a.slot_ctx} tokens)\n")
    print("| server | KV | clients | aggregate tok/s | TTFT p50 s | TTFT p99 s | ITL p50 ms | ITL p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['server']} | {r['kv']} | {r['clients']} | {r['tok_s']:.1f} | {r['ttft_p50']:.3f} | "
              f"{r['ttft_p99']:.3f} | {r['itl_p50'] * 1000:.0f} | {r['itl_p99'] * 1000:.0f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
