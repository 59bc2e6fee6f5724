#!/usr/bin/env python3
"""Multi-round conversations through HAProxy (scripts/cluster.py): one replica with all cores against
several with a share each, and round-robin against session-hash routing.

  .venv/bin/python bench/cluster_load.py [-m MODEL] [--users 8] [--turns 6] [--system-tokens 1000]
      [--answer-tokens 100] [--configs 1:session,2:roundrobin,2:session] [--json out.json]

Every user holds one conversation: a shared system prompt of about --system-tokens tokens of prose,
then --turns turns, each a short question and an answer of at most --answer-tokens tokens (greedy, so
the same in every configuration), the whole history sent each turn with the user's id in the body's
"user" field. Users run concurrently, each turn right after the previous answer. Reported: generated
tok/s over the run, time to first token p50/p99, the prefix-cache hit rate summed over the replicas'
/metrics (vllm:prefix_cache_hits / vllm:prefix_cache_queries), and failed requests.
"""
import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from openai import AsyncOpenAI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_ID = "m"


def metric_sum(ports, name):
    total = 0.0
    for p in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + "{") or line.startswith(name + " "):
                    total += float(line.rsplit(" ", 1)[1])
    return total


async def conversation(client, user, system, a, ttfts, counts):
    messages = [{"role": "system", "content": system}]
    for turn in range(a.turns):
        messages.append({"role": "user", "content": f"Question {turn + 1}: what happens next in this scene?"})
        t0 = time.perf_counter()
        first, parts = None, []
        try:
            stream = await client.chat.completions.create(model=MODEL_ID, messages=messages, user=f"user-{user}",
                                                          max_tokens=a.answer_tokens, temperature=0, stream=True,
                                                          stream_options={"include_usage": True})
            async for c in stream:
                if c.choices and c.choices[0].delta.content:
                    if first is None:
                        first = time.perf_counter() - t0
                    parts.append(c.choices[0].delta.content)
                if c.usage:
                    counts["tokens"] += c.usage.completion_tokens
        except Exception:  # noqa: BLE001 - counted; the conversation goes on without this answer
            counts["failed"] += 1
            messages.pop()
            continue
        if first is not None:
            ttfts.append(first)
        messages.append({"role": "assistant", "content": "".join(parts)})


async def workload(port, system, a):
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=3600)
    ttfts, counts = [], {"tokens": 0, "failed": 0}
    t0 = time.perf_counter()
    await asyncio.gather(*[conversation(client, u, system, a, ttfts, counts) for u in range(a.users)])
    wall = time.perf_counter() - t0
    await client.close()
    return ttfts, counts, wall


def run_config(a, n, routing, system):
    ready = os.path.join(tempfile.mkdtemp(), "ready.json")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "cluster.py"), "-n", str(n), "-m", a.m,
                             "--port", "0", "--routing", routing, "--kv-mem", str(a.kv_mem // n),
                             "--maxconn", "16", "--ready-file", ready, "--", "--model-id", MODEL_ID, "-c", "8192"],
                            stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while not os.path.exists(ready):
            if proc.poll() is not None or time.time() - t0 > 180:
                raise SystemExit("cluster did not start")
            time.sleep(0.1)
        info = json.load(open(ready))
        base = info["port"]
        ports = [r["port"] for r in info["replicas"]]
        q0 = metric_sum(ports, "vllm:prefix_cache_queries")
        h0 = metric_sum(ports, "vllm:prefix_cache_hits")
        ttfts, counts, wall = asyncio.run(workload(base, system, a))
        q = metric_sum(ports, "vllm:prefix_cache_queries") - q0
        h = metric_sum(ports, "vllm:prefix_cache_hits") - h0
        ttfts.sort()
        if not ttfts:
            raise SystemExit(f"no request of {n}:{routing} answered")
        return {"replicas": n, "threads_each": len(os.sched_getaffinity(0)) // n, "routing": routing,
                "tok_s": counts["tokens"] / wall, "ttft_p50": ttfts[len(ttfts) // 2],
                "ttft_p99": ttfts[min(len(ttfts) - 1, int(0.99 * (len(ttfts) - 1)))],
                "hit_rate": h / q if q else 0.0, "failed": counts["failed"], "wall_s": wall}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(180)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", default=os.path.join(ROOT, "models", "smollm2-135m-instruct-q4_1.gguf"))
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--system-tokens", type=int, default=1000)
    ap.add_argument("--answer-tokens", type=int, default=100)
    ap.add_argument("--kv-mem", type=int, default=1024, help="KV MiB in all, split between the replicas")
    ap.add_argument("--configs", default="1:session,2:roundrobin,2:session")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    prose = open(os.path.join(ROOT, "data", "hamlet.txt"), encoding="utf-8").read()
    system = "Answer questions about this text.\n\n" + prose[:int(a.system_tokens * 3.1)]
    rows = []
    for spec in a.configs.split(","):
        n, routing = spec.split(":")
        r = run_config(a, int(n), routing, system)
        rows.append(r)
        print(r, flush=True)
    print(f"\n{a.users} users x {a.turns} turns, ~{a.system_tokens}-token shared system prompt, answers of at most "
          f"{a.answer_tokens} tokens ({os.path.basename(a.m)})\n")
    print("| replicas x threads | routing | generated tok/s | TTFT p50 s | TTFT p99 s | prefix hit rate | failed |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['replicas']} x {r['threads_each']} | {r['routing']} | {r['tok_s']:.1f} | {r['ttft_p50']:.3f} | "
              f"{r['ttft_p99']:.3f} | {r['hit_rate']:.2f} | {r['failed']} |")
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
