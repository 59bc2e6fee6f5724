#!/usr/bin/env python3
"""Multi-round conversations through a balancer (scripts/cluster.py): one replica with all cores against
several with a share each, and round-robin against session-affine routing.

  .venv/bin/python bench/cluster_load.py [-m MODEL] [--users 8] [--turns 6] [--system-tokens 1000]
      [--doc-tokens 0] [--answer-tokens 100] [--think 0] [--spread 0] [--kv-mem 1024]
      [--configs 1:session,2:roundrobin,2:session] [--repeats 1] [--json out.json]

The workload (the same in every configuration; bench/route_sim.py models the same one):
- U users, each holding one conversation: a system prompt of about --system-tokens tokens of prose
  shared by all users; with --doc-tokens, the first user message carries a document of about that
  many tokens of the user's own (a different passage for each user), so that a conversation's own
  history, not the shared prompt, is most of what a replica has to hold or recompute;
- --turns turns, each a short question and an answer of at most --answer-tokens tokens (greedy, so
  the same in every configuration), the whole history sent each turn, named by the body's "user"
  field;
- user u starts at a time drawn from [0, --spread) s and sends each next turn a think time after the
  previous answer ends (exponential, mean --think s; 0: at once). Start and think times are drawn
  from --seed, so every configuration replays the same trace.
- --kv-mem MiB of KV in all, split evenly between the replicas (the same memory for every layout).

A configuration is REPLICAS:ROUTING[:OPTION...]: routing session | sticky | roundrobin | leastconn; options
sglang (SGLang's router instead of HAProxy: cache_aware for session, from --sglang-python) and
bf=PERCENT (HAProxy's hash-balance-factor, 150 by default), abs=N (SGLang's balance-abs-threshold).

Reported per configuration (the median over --repeats runs): generated tok/s over the run, time to
first token p50/p99 (all requests, and p99 of the later turns alone: the first turn of a conversation
is cold under any routing), the prefix-cache hit rate summed over the replicas' /metrics
(vllm:prefix_cache_hits / vllm:prefix_cache_queries), how the users spread over the replicas
(HAProxy's X-Served-By), and failed requests.
"""
import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from openai import AsyncOpenAI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from route_sim import percentile, trace  # noqa: E402 - the same trace the simulation replays

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_ID = "m"
CHARS_PER_TOKEN = 3.1  # English prose under SmolLM2's and Gemma's tokenizers, near enough


def metric_sum(ports, name):
    total = 0.0
    for p in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + "{") or line.startswith(name + " "):
                    total += float(line.rsplit(" ", 1)[1])
    return total


async def conversation(client, user, system, doc, plan, a, t_start, records):
    start, thinks = plan
    await asyncio.sleep(max(0.0, t_start + start - time.perf_counter()))
    messages = [{"role": "system", "content": system}]
    for turn in range(a.turns):
        if turn > 0 and thinks[turn - 1] > 0:
            await asyncio.sleep(thinks[turn - 1])
        question = f"Question {turn + 1}: what happens next in this scene?"
        if turn == 0 and doc:
            question = f"Here is my passage:\n\n{doc}\n\n{question}"
        messages.append({"role": "user", "content": question})
        rec = {"user": user, "turn": turn, "ttft": None, "replica": None, "prompt": 0, "cached": 0, "tokens": 0,
               "failed": False}
        t0 = time.perf_counter()
        parts = []
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL_ID, messages=messages, user=f"user-{user}", max_tokens=a.answer_tokens, temperature=0,
                stream=True, stream_options={"include_usage": True})
            rec["replica"] = raw.headers.get("x-served-by")
            async for c in raw.parse():
                if c.choices and c.choices[0].delta.content:
                    if rec["ttft"] is None:
                        rec["ttft"] = time.perf_counter() - t0
                    parts.append(c.choices[0].delta.content)
                if c.usage:
                    rec["tokens"] = c.usage.completion_tokens
                    rec["prompt"] = c.usage.prompt_tokens
                    d = c.usage.prompt_tokens_details
                    rec["cached"] = d.cached_tokens if d and d.cached_tokens else 0
        except Exception:  # noqa: BLE001 - counted; the conversation goes on without this answer
            rec["failed"] = True
            messages.pop()
            records.append(rec)
            continue
        records.append(rec)
        messages.append({"role": "assistant", "content": "".join(parts)})


async def workload(port, system, docs, plans, a):
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=3600)
    records = []
    t0 = time.perf_counter()
    await asyncio.gather(*[conversation(client, u, system, docs[u], plans[u], a, t0, records) for u in range(a.users)])
    wall = time.perf_counter() - t0
    await client.close()
    return records, wall


def parse_config(spec):
    parts = spec.split(":")
    cfg = {"n": int(parts[0]), "routing": parts[1], "router": "haproxy", "bf": 150, "abs": None}
    for opt in parts[2:]:
        if opt in ("haproxy", "sglang"):
            cfg["router"] = opt
        elif opt.startswith("bf="):
            cfg["bf"] = int(opt[3:])
        elif opt.startswith("abs="):
            cfg["abs"] = int(opt[4:])
        else:
            raise SystemExit(f"cluster_load: unknown option {opt!r} in {spec!r}")
    return cfg


def run_config(a, cfg, system, docs, plans):
    n, routing, router = cfg["n"], cfg["routing"], cfg["router"]
    ready = os.path.join(tempfile.mkdtemp(), "ready.json")
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "cluster.py"), "-n", str(n), "-m", a.m, "--port", "0",
           "--routing", routing, "--router", router, "--sglang-python", a.sglang_python,
           "--balance-factor", str(cfg["bf"])] + (["--sglang-balance-abs", str(cfg["abs"])] if cfg["abs"] is not None else []) + [
           "--kv-mem", str(a.kv_mem // n), "--maxconn", "16", "--ready-file", ready,
           "--", "--model-id", MODEL_ID, "-c", "8192"]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while not os.path.exists(ready):
            if proc.poll() is not None or time.time() - t0 > 180:
                raise SystemExit(f"cluster {n}:{routing}:{router} did not start")
            time.sleep(0.1)
        info = json.load(open(ready))
        ports = [r["port"] for r in info["replicas"]]
        q0 = metric_sum(ports, "vllm:prefix_cache_queries")
        h0 = metric_sum(ports, "vllm:prefix_cache_hits")
        records, wall = asyncio.run(workload(info["port"], system, docs, plans, a))
        q = metric_sum(ports, "vllm:prefix_cache_queries") - q0
        h = metric_sum(ports, "vllm:prefix_cache_hits") - h0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(180)
    ok = [r for r in records if not r["failed"] and r["ttft"] is not None]
    if not ok:
        raise SystemExit(f"no request of {n}:{routing}:{router} answered")
    users_on = {}
    for r in ok:
        users_on.setdefault(r["replica"], set()).add(r["user"])
    moved = sum(1 for u in range(a.users) if len({r["replica"] for r in ok if r["user"] == u}) > 1)
    return {"replicas": n, "threads_each": len(os.sched_getaffinity(0)) // n, "routing": routing, "router": router, "bf": cfg["bf"], "abs": cfg["abs"],
            "tok_s": sum(r["tokens"] for r in ok) / wall,
            "ttft_p50": percentile([r["ttft"] for r in ok], 0.5),
            "ttft_p99": percentile([r["ttft"] for r in ok], 0.99),
            "ttft_p99_later": percentile([r["ttft"] for r in ok if r["turn"] > 0], 0.99),
            "hit_rate": h / q if q else 0.0,
            "hit_rate_usage": sum(r["cached"] for r in ok) / max(1, sum(r["prompt"] for r in ok)),
            "mean_prompt": statistics.mean(r["prompt"] for r in ok),
            "users_per_replica": sorted((len(v) for k, v in users_on.items() if k), reverse=True),
            "users_moved": moved, "failed": sum(1 for r in records if r["failed"]), "wall_s": wall,
            "requests": records}


def median_row(runs):
    """One row from several runs of a configuration: medians of the figures, failures summed."""
    row = dict(runs[0])
    for k in ("tok_s", "ttft_p50", "ttft_p99", "ttft_p99_later", "hit_rate", "hit_rate_usage", "wall_s"):
        row[k] = statistics.median(r[k] for r in runs)
    row["failed"] = sum(r["failed"] for r in runs)
    row["runs"] = [{k: v for k, v in r.items() if k != "requests"} for r in runs]
    row["requests"] = [r["requests"] for r in runs]
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", default=os.path.join(ROOT, "models", "smollm2-135m-instruct-q4_1.gguf"))
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--system-tokens", type=int, default=1000)
    ap.add_argument("--doc-tokens", type=int, default=0, help="a document of the user's own in the first turn")
    ap.add_argument("--answer-tokens", type=int, default=100)
    ap.add_argument("--think", type=float, default=0.0, help="mean think time between turns, s (0: none)")
    ap.add_argument("--spread", type=float, default=0.0, help="users start within this many seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kv-mem", type=int, default=1024, help="KV MiB in all, split between the replicas")
    ap.add_argument("--configs", default="1:session,2:roundrobin,2:session")
    ap.add_argument("--repeats", type=int, default=1, help="runs per configuration, interleaved; medians reported")
    ap.add_argument("--sglang-python", default=sys.executable, help="a Python with sglang-router (for :sglang)")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    prose = open(os.path.join(ROOT, "data", "hamlet.txt"), encoding="utf-8").read()
    system = "Answer questions about this text.\n\n" + prose[:int(a.system_tokens * CHARS_PER_TOKEN)]
    docs = [""] * a.users
    if a.doc_tokens:
        works = open(os.path.join(ROOT, "data", "shakespeare.txt"), encoding="utf-8").read()
        n = int(a.doc_tokens * CHARS_PER_TOKEN)
        stride = max(n, (len(works) - n) // a.users)
        docs = [works[u * stride:u * stride + n] for u in range(a.users)]
    plans = trace(a.users, a.turns, a.think, a.spread, a.seed)
    specs = a.configs.split(",")
    runs = {s: [] for s in specs}
    for _ in range(a.repeats):
        for s in specs:
            r = run_config(a, parse_config(s), system, docs, plans)
            runs[s].append(r)
            print({k: v for k, v in r.items() if k != "requests"}, flush=True)
    rows = [median_row(runs[s]) for s in specs]
    workload = {k: getattr(a, k) for k in ("users", "turns", "system_tokens", "doc_tokens", "answer_tokens", "think",
                                          "spread", "seed", "kv_mem")}
    for r in rows:
        r["workload"] = workload
    print(f"\n{a.users} users x {a.turns} turns, ~{a.system_tokens}-token shared system prompt"
          + (f", a ~{a.doc_tokens}-token document per user" if a.doc_tokens else "")
          + f", answers of at most {a.answer_tokens} tokens, think {a.think} s, spread {a.spread} s, "
          f"{a.kv_mem} MiB KV in all ({os.path.basename(a.m)}; median of {a.repeats})\n")
    print("| replicas x threads | routing | generated tok/s | TTFT p50 s | TTFT p99 s | p99 later turns s | "
          "prefix hit rate | users per replica | failed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = r["routing"] + (" (sglang-router" + (f", abs {r['abs']})" if r["abs"] is not None else ")")
                               if r["router"] == "sglang" else "")
        if r["routing"] == "session" and r["router"] == "haproxy" and r["replicas"] > 1:
            name += f", factor {r['bf']}"
        spread = "/".join(map(str, r["users_per_replica"])) if r["router"] == "haproxy" else "-"
        print(f"| {r['replicas']} x {r['threads_each']} | {name} | {r['tok_s']:.1f} | {r['ttft_p50']:.3f} | "
              f"{r['ttft_p99']:.3f} | {r['ttft_p99_later']:.3f} | {r['hit_rate']:.2f} | {spread} | {r['failed']} |")
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
