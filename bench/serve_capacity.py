#!/usr/bin/env python3
"""How many 4k-token conversations run at once in a fixed KV budget: `leanlm serve --kv-mem` per codec,
and what the same bytes hold in llama-server.

  .venv/bin/python bench/serve_capacity.py [-m models/smollm2-135m-instruct-q4_1.gguf] [--kv-mib 256]
      [--codecs f16,kivi4,kivi2] [--prompt-tokens 4000] [--requests 16]

leanlm: --requests streaming requests with distinct ~--prompt-tokens-token prompts (a different first
sentence each, so nothing is shared; prefix reuse off) arrive at once; the scheduler admits a request
only when its whole prompt fits the budget, so the most requests running at once (polled from
/metrics) is the number of conversations the budget holds. llama-server allocates its KV up front:
the bytes per token come from its log for a context of --kv-mib worth of f16 tokens, and the slots
of 4k tokens that context holds are the conversations it serves at once.
"""
import argparse
import asyncio
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.request

from openai import AsyncOpenAI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLAMA_SERVER = os.path.join(ROOT, "build-llamacpp", "bin", "llama-server")


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
    raise SystemExit("metric missing: " + name)


def prose(n_chars):
    text = open(os.path.join(ROOT, "data", "shakespeare.txt"), encoding="utf-8").read()
    while len(text) < n_chars:
        text += text
    return text[:n_chars]


async def run_requests(port, prompts):
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=3600)

    async def one(p):
        r = await client.completions.create(model="m", prompt=p, max_tokens=4, temperature=0)
        return r.usage.prompt_tokens

    out = await asyncio.gather(*[one(p) for p in prompts])
    await client.close()
    return out


def leanlm_capacity(model, codec, kv_mib, prompts, ctx):
    ready = os.path.join(tempfile.mkdtemp(), "ready")
    args = [os.path.join(ROOT, "build", "leanlm"), "serve", "-m", model, "--port", "0", "--model-id", "m",
            "-c", str(ctx), "--kv-codec", codec, "--kv-mem", str(kv_mib), "--prefix-cache", "0",
            "--max-running", "64", "--max-waiting", "256", "--ready-file", ready]
    log = os.path.join(os.path.dirname(ready), "server.log")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    print(f"{codec}: server log {log}", flush=True)
    try:
        while not os.path.exists(ready):
            if proc.poll() is not None:
                raise SystemExit("leanlm serve did not start")
            time.sleep(0.05)
        port = int(open(ready).read())
        peak = [0.0, 0.0]  # running, KV bytes
        done = threading.Event()

        def poll():
            while not done.is_set():
                peak[0] = max(peak[0], metric(port, "vllm:num_requests_running"))
                peak[1] = max(peak[1], metric(port, "leanlm:kv_cache_bytes"))
                time.sleep(0.1)

        t = threading.Thread(target=poll)
        t.start()
        t0 = time.time()
        tokens = asyncio.run(run_requests(port, prompts))
        done.set()
        t.join()
        return int(peak[0]), peak[1], min(tokens), time.time() - t0
    finally:
        proc.terminate()
        proc.wait(60)


def llama_bytes_per_token(model, ctx):
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([LLAMA_SERVER, "-m", model, "--port", str(port), "-c", str(ctx), "-np", "1", "-fa", "on",
                             "--no-webui", "-lv", "4"], stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        while time.time() - t0 < 120:
            text = open(log.name, errors="replace").read()
            m = re.findall(r"llama_kv_cache: size =\s*([0-9.]+) MiB", text)
            if m:
                return sum(float(x) for x in m) * 1048576 / ctx
            time.sleep(0.2)
        raise SystemExit("no KV size in llama-server's log: " + log.name)
    finally:
        proc.terminate()
        proc.wait(60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", default=os.path.join(ROOT, "models", "smollm2-135m-instruct-q4_1.gguf"))
    ap.add_argument("--kv-mib", type=int, default=256)
    ap.add_argument("--codecs", default="f16,kivi4,kivi2")
    ap.add_argument("--prompt-tokens", type=int, default=4000)
    ap.add_argument("--requests", type=int, default=16)
    a = ap.parse_args()
    body = prose(int(a.prompt_tokens * 3.2))  # about 3.3 characters a token in this text
    prompts = [f"Conversation number {i}. " + body for i in range(a.requests)]
    ctx = a.prompt_tokens + 600
    rows = []
    if os.path.exists(LLAMA_SERVER):
        bpt = llama_bytes_per_token(a.m, 8192)
        tokens = int(a.kv_mib * 1048576 / bpt)
        rows.append(("llama-server", "f16", tokens // 4096, f"{bpt:.0f} B/token: {tokens} tokens"))
    for codec in a.codecs.split(","):
        n, kv_bytes, ptoks, secs = leanlm_capacity(a.m, codec, a.kv_mib, prompts, ctx)
        rows.append(("leanlm", codec, n, f"prompts of {ptoks} tokens, peak KV {kv_bytes / 1048576:.0f} MiB, {secs:.0f} s"))
        print(rows[-1], flush=True)
    print(f"\nConcurrent conversations of ~{a.prompt_tokens} tokens in {a.kv_mib} MiB of KV ({os.path.basename(a.m)})\n")
    print("| server | KV | conversations at once | notes |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")


if __name__ == "__main__":
    main()
