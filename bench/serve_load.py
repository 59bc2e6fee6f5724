#!/usr/bin/env python3
"""Throughput of `leanlm serve` with N concurrent clients: aggregate generated tokens per second,
time to first token, and the engine's batching (tokens per forward pass), for N = 1, 2, 4, 8, 16.

  .venv/bin/python bench/serve_load.py [-m smollm2-135m] [--clients 1,2,4,8,16] [--tokens 64]

Each client streams one completion of --tokens tokens (ignoring end of turn is not possible over
the API, so prompts are chosen to produce long text); figures come from the client side and from
the server's /metrics.
"""
import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        out = {}
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#") and "{" not in line:
                k, v = line.split()
                out[k] = float(v)
        return out


def one_request(port, i, tokens, res):
    body = json.dumps({"prompt": f"Chapter {i}. It was a cold morning when", "max_tokens": tokens,
                       "temperature": 0.8, "seed": i, "stream": True}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.time()
    first = None
    n = 0
    with urllib.request.urlopen(req, timeout=600) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ch = json.loads(line[6:])
            if ch["choices"] and ch["choices"][0]["text"]:
                n += 1
                if first is None:
                    first = time.time() - t0
    res.append((first, n, time.time() - t0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", default="smollm2-135m")
    ap.add_argument("--clients", default="1,2,4,8,16")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    ready = os.path.join(tempfile.mkdtemp(), "ready")
    args = [os.path.join(ROOT, "build", "leanlm"), "serve", "-m", a.m, "--port", "0", "-c", "2048",
            "--ready-file", ready, "--max-running", "64"]
    if a.threads:
        args += ["-t", str(a.threads)]
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(ready):
            time.sleep(0.05)
        port = int(open(ready).read())
        print("| clients | aggregate tok/s | per client tok/s | TTFT median s | tokens per forward pass |")
        print("|---|---|---|---|---|")
        for n in [int(x) for x in a.clients.split(",")]:
            m0 = metrics(port)
            res = []
            threads = [threading.Thread(target=one_request, args=(port, i, a.tokens, res)) for i in range(n)]
            t0 = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.time() - t0
            m1 = metrics(port)
            gen = m1["leanlm:generation_tokens_total"] - m0["leanlm:generation_tokens_total"]
            steps = m1["leanlm:engine_steps_total"] - m0["leanlm:engine_steps_total"]
            prompt = m1["leanlm:prompt_tokens_total"] - m0["leanlm:prompt_tokens_total"]
            ttft = sorted(r[0] for r in res if r[0] is not None)
            print(f"| {n} | {gen / wall:.1f} | {gen / wall / n:.1f} | {ttft[len(ttft) // 2]:.3f} | "
                  f"{(gen + prompt) / max(steps, 1):.1f} |")
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
