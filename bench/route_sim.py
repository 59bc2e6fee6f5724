#!/usr/bin/env python3
"""Routing simulation: a multi-user conversation trace replayed against a model of N replicas, for
sizes this machine cannot run (N = 2 ... 128), with per-token costs measured on a real replica.

  .venv/bin/python bench/route_sim.py --measure costs.json [-m MODEL] [--threads 1]   # real replica
  .venv/bin/python bench/route_sim.py --costs costs.json [--replicas 2,8,32,128] [--users-per-replica 4]
      [--doc-tokens 0] [--think 2] [--spread 5] [--kv-mem MiB --kv-bytes-per-token B | --cache-tokens T]

Measured (--measure, one `leanlm serve` pinned to --threads cores): cold prompts of 500 to 3,000
tokens, fitted as t(n) = a n + c n^2 (attention over the earlier positions grows with n), and the
inter-token latency of b = 1 ... 8 concurrent streams at contexts of ~30 and ~2,500 tokens, fitted as
t = t0 + t1 b + t2 (b x context): decode reads every cached token's K and V at each step.

The model (its assumptions):
- Trace: U users; each holds a conversation of --turns turns: a shared system prompt of S tokens, a
  document of --doc-tokens tokens of the user's own in the first turn, a user message of u tokens per
  turn, an answer of a tokens; a user sends the next turn a think time (exponential, mean --think s)
  after the previous answer ends; users start at uniform times in [0, --spread) s. The times come
  from trace() with --seed, the same draws bench/cluster_load.py replays against real replicas.
- A replica runs continuous batching: each step decodes one token of every running sequence and
  reads up to 512 prompt tokens (the prompts with the fewest tokens left first, as the server does),
  taking the measured decode and prompt costs at the sequences' positions; up to --max-running sequences run at once, and a
  request is admitted (first come, first served) when its own new tokens fit the KV budget beside
  the running sequences and cached histories, cached histories of other conversations giving way.
- KV budget per replica: --cache-tokens tokens, or --kv-mem MiB / --kv-bytes-per-token. It holds
  the running sequences' own tokens (prompt not found in cache, plus the answer) and the prefix cache:
  the conversations the replica served, each its whole history so far (the system prompt counted
  once: its memory is shared, as in the server), dropped least recently used first when a request
  needs room. A request finds the longest cached prefix (its own conversation's history, or another
  conversation's system prompt) when it is admitted and computes only the rest.
- Routing: round-robin; least connections (running + queued); sticky: a conversation's first
  request by least connections, the rest where it went (HAProxy's stick table); session hash: consistent hashing of
  the user id on a ring (100 virtual nodes per replica), moving to the next replica on the ring while
  the chosen one carries more than --balance-factor x the average load (HAProxy's bounded load).
Not modelled: the bit of HAProxy's hash that picks a replica (users spread over replicas differently
from the real run), preemption, the HTTP and balancer overheads. Reported per policy and N: prefix
hit rate (prompt tokens found / prompt tokens), TTFT p50/p99 (and p99 of later turns), generated
tok/s over the run.
"""
import argparse
import bisect
import hashlib
import heapq
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- measuring a real replica ---------------------------------------------------------------------

def measure(a):
    """Costs of one real replica: prompt time as a function of length, decode step time as a function
    of batch size and context (KV read per step)."""
    import threading

    import numpy as np
    from openai import OpenAI  # only needed here
    ready = os.path.join(tempfile.mkdtemp(), "ready")
    cores = ",".join(map(str, sorted(os.sched_getaffinity(0))[:a.threads]))
    proc = subprocess.Popen(["taskset", "-c", cores, os.path.join(ROOT, "build", "leanlm"), "serve", "-m", a.m,
                             "--port", "0", "--model-id", "m", "-t", str(a.threads), "-c", "8192",
                             "--ready-file", ready], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(ready):
            time.sleep(0.05)
        port = int(open(ready).read())
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        works = open(os.path.join(ROOT, "data", "shakespeare.txt"), encoding="utf-8").read()
        offset = [100000]

        def passage(tokens):  # fresh text every time: no prefix-cache hits between measurements
            offset[0] += 20000
            return works[offset[0]:offset[0] + int(tokens * 3.1)]

        def prompt_time(text):
            t0 = time.perf_counter()
            r = client.completions.create(model="m", prompt=text, max_tokens=1, temperature=0)
            return time.perf_counter() - t0, r.usage.prompt_tokens

        prompt_time(passage(200))  # warm up
        # Prompt time t(n) = a n + c n^2: the n^2 term is attention over the positions before.
        cold = [prompt_time(passage(n)) for n in (500, 1500, 3000) for _ in range(2)]
        (pa, pc), *_ = np.linalg.lstsq(np.array([[n, n * n] for _, n in cold], float),
                                       np.array([t for t, _ in cold]), rcond=None)
        # Decode steps of b sequences at a context of L tokens each: t = t0 + t1 b + t2 b L.
        samples = []
        for ctx in (30, 2500):
            prefix = passage(ctx) if ctx > 30 else "Chapter one. It was a cold morning when"
            prompt_time(prefix)  # cached: the streams below read their prompts from it
            for b in (1, 2, 4, 8):
                gaps, lens = [], []

                def stream(i):
                    last = None
                    for c in client.completions.create(model="m", prompt=prefix + f" {i}.", max_tokens=48,
                                                       temperature=0.8, seed=i, stream=True,
                                                       stream_options={"include_usage": True}):
                        if c.usage:
                            lens.append(c.usage.prompt_tokens)
                            continue
                        now = time.perf_counter()
                        if last is not None:
                            gaps.append(now - last)
                        last = now

                th = [threading.Thread(target=stream, args=(i,)) for i in range(b)]
                for t in th:
                    t.start()
                for t in th:
                    t.join()
                samples.append((b, statistics.mean(lens), statistics.median(gaps)))
        (t0, t1, t2), *_ = np.linalg.lstsq(np.array([[1, b, b * L] for b, L, _ in samples], float),
                                           np.array([g for _, _, g in samples]), rcond=None)
        costs = {"model": os.path.basename(a.m), "threads": a.threads,
                 "prompt_s": [[n, t] for t, n in cold], "prompt_a": pa, "prompt_c": pc,
                 "t_prompt_token": (pa * 1000 + pc * 1000 * 1000) / 1000,  # per token of a 1,000-token prompt
                 "step_s": [[b, L, g] for b, L, g in samples], "t0": t0, "t1": t1, "t2": t2}
        with open(a.measure, "w") as f:
            json.dump(costs, f, indent=1)
        print(json.dumps(costs, indent=1))
    finally:
        proc.terminate()
        proc.wait(60)


# ---- the simulation -----------------------------------------------------------------------------

def percentile(xs, q):
    """The q-quantile of xs (the element at q of the way through the sorted list)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1)))] if xs else float("nan")


def trace(users, turns, think, spread, seed):
    """Per user: (start time, think times before turns 2..T), drawn from the seed."""
    rng = random.Random(seed)
    return [(rng.uniform(0, spread) if spread > 0 else 0.0,
             [rng.expovariate(1.0 / think) if think > 0 else 0.0 for _ in range(turns - 1)])
            for _ in range(users)]


class Replica:
    def __init__(self, i, a):
        self.i, self.a = i, a
        self.queue, self.running = [], []
        self.busy_until = 0.0
        self.cache = {}  # user -> cached history tokens (LRU order = insertion order)

    def load(self):
        return len(self.running) + len(self.queue)

    def cached_prefix(self, req):
        own = self.cache.get(req["user"], 0)
        hit = min(own, req["prompt"] - 1)
        if hit < self.a.system and (self.cache or self.running):  # another conversation's system prompt
            hit = min(self.a.system, req["prompt"] - 1)
        return hit

    def held(self):
        """Tokens of KV in use: cached histories (the system prompt once) and running sequences' own."""
        cached = self.a.system + sum(t - self.a.system for t in self.cache.values()) if self.cache else 0
        return cached + sum(q["own"] for q in self.running)

    def admit(self, q):
        """Takes q in if its own tokens fit the budget, dropping other users' cached histories least
        recently used first (as the server does); False if it has to wait for running sequences."""
        q["hit"] = self.cached_prefix(q)
        q["own"] = q["prompt"] - q["hit"] + q["left_gen"]
        busy = {r["user"] for r in self.running} | {q["user"]}
        while self.held() + q["own"] > self.a.cache_tokens:
            victims = [u for u in self.cache if u not in busy]
            if not victims:
                return bool(not self.running)  # alone, it runs anyway (the server would preempt)
            self.cache.pop(victims[0])
        return True

    def remember(self, user, tokens):
        self.cache.pop(user, None)
        self.cache[user] = tokens


def simulate(a, costs, n_rep, policy, seed=1, factor=1.5):
    users = n_rep * a.users_per_replica
    reps = [Replica(i, a) for i in range(n_rep)]
    ring = sorted((int(hashlib.md5(f"r{r}-{v}".encode()).hexdigest()[:12], 16), r)
                  for r in range(n_rep) for v in range(100))
    keys = [k for k, _ in ring]
    rr = [0]
    table = {}  # sticky: user -> replica
    # Costs: prompt tokens from position p0 to p1 take pa (p1 - p0) + pc (p1^2 - p0^2); a decode
    # step of b sequences holding L tokens in all takes t0 + t1 b + t2 L.
    pa, pc = costs.get("prompt_a", costs["t_prompt_token"]), costs.get("prompt_c", 0.0)
    t0, t1, t2 = costs["t0"], costs["t1"], costs.get("t2", 0.0)
    events = []  # (time, seq, kind, payload)
    seq = [0]

    def push(t, kind, payload):
        seq[0] += 1
        heapq.heappush(events, (t, seq[0], kind, payload))

    history = {u: a.system + a.doc_tokens for u in range(users)}
    turn = {u: 0 for u in range(users)}
    # Every policy sees the same workload: start and think times drawn per user in advance.
    plans = trace(users, a.turns, a.think, a.spread, seed)
    for u in range(users):
        push(plans[u][0], "arrive", u)
    served_by = {u: set() for u in range(users)}
    ttft, ttft_later, gen_tok = [], [], 0
    stats = {"hit": 0, "prompt": 0}  # prompt tokens found in the cache at admission, and in all
    t_end = 0.0

    def route(u):
        if policy == "round-robin":
            rr[0] = (rr[0] + 1) % n_rep
            return reps[rr[0]]
        if policy in ("least-conn", "sticky") and not (policy == "sticky" and u in table):
            rr[0] += 1  # ties rotate, as HAProxy's leastconn does
            r = min(reps, key=lambda r: (r.load(), (r.i - rr[0]) % n_rep))
            table[u] = r  # sticky: the conversation stays where its first request went
            return r
        if policy == "sticky":
            return table[u]
        # Consistent hashing with bounded load, as HAProxy computes it: the requests in flight plus
        # this one, times the factor, shared out per replica (at least one slot each); the first
        # replica on the ring from the key's point with a free slot takes it.
        h = int(hashlib.md5(f"user-{u}".encode()).hexdigest()[:12], 16)
        start = bisect.bisect(keys, h) % len(ring)
        slots = max(1, math.ceil((sum(r.load() for r in reps) + 1) * factor / n_rep))
        for k in range(len(ring)):
            r = reps[ring[(start + k) % len(ring)][1]]
            if r.load() < slots:
                return r
        return reps[ring[start][1]]

    def step(r, now):
        """Runs one engine step of replica r starting at now; schedules the next one."""
        while r.queue and len(r.running) < a.max_running and r.admit(r.queue[0]):
            q = r.queue.pop(0)
            q["left_prompt"] = q["prompt"] - q["hit"]
            stats["hit"] += q["hit"]
            r.running.append(q)
        if not r.running:
            return
        # One step's tokens: one per decoding sequence, the rest of 512 for prompts.
        budget = 512 - sum(1 for q in r.running if q["left_prompt"] == 0 and not q.get("fresh"))
        prompt_s = 0.0
        # Fewest prompt tokens left first; the oldest prompt (running list order = admission order)
        # keeps a quarter of the step in reserve, as the server does.
        prompts = sorted((q for q in r.running if q["left_prompt"] > 0), key=lambda q: q["left_prompt"])
        oldest = next((q for q in r.running if q["left_prompt"] > 0), None)
        reserve = min(oldest["left_prompt"], 128) if oldest is not None and oldest is not prompts[0] else 0
        for q in [p for p in prompts if p is not oldest or not reserve] + ([oldest] if reserve else []):
            room = budget - (reserve if q is not oldest else 0)
            if room > 0:
                n = min(q["left_prompt"], room)
                p0 = q["prompt"] - q["left_prompt"]
                prompt_s += pa * n + pc * ((p0 + n) ** 2 - p0 ** 2)
                q["left_prompt"] -= n
                budget -= n
                q["fresh"] = q["left_prompt"] == 0
        decoders = [q for q in r.running if q["left_prompt"] == 0 and not q.get("fresh")]
        held = sum(q["prompt"] + a.answer_tokens - q["left_gen"] for q in decoders)
        dt = (t0 + t1 * len(decoders) + t2 * held if decoders else 0.0) + prompt_s
        dt = max(dt, 1e-4)
        t = now + dt
        done = []
        for q in r.running:
            if q.get("fresh"):  # prompt finished this step: first token
                q["fresh"] = False
                ttft.append(t - q["t_arrive"])
                if q["turn"] > 0:
                    ttft_later.append(t - q["t_arrive"])
                q["left_gen"] -= 1
            elif q["left_prompt"] == 0:
                q["left_gen"] -= 1
            if q["left_prompt"] == 0 and q["left_gen"] <= 0:
                done.append(q)
        for q in done:
            r.running.remove(q)
            push(t, "done", (r.i, q))
        r.busy_until = t
        push(t, "step", r.i)

    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "arrive":
            u = payload
            prompt = history[u] + a.user_tokens
            r = route(u)
            req = {"user": u, "prompt": prompt, "t_arrive": now, "left_gen": a.answer_tokens, "turn": turn[u]}
            served_by[u].add(r.i)
            stats["prompt"] += prompt
            r.queue.append(req)
            if r.busy_until <= now:
                r.busy_until = now
                step(r, now)
        elif kind == "step":
            r = reps[payload]
            if r.busy_until <= now:
                step(r, now)
        else:  # done
            ri, q = payload
            u = q["user"]
            gen_tok += a.answer_tokens
            history[u] = q["prompt"] + a.answer_tokens
            reps[ri].remember(u, history[u])
            t_end = max(t_end, now)
            turn[u] += 1
            if turn[u] < a.turns:
                push(now + plans[u][1][turn[u] - 1], "arrive", u)
    per_replica = [0] * n_rep
    for u in range(users):
        for i in served_by[u]:
            per_replica[i] += 1
    name = policy if policy != "session-hash" else f"session-hash, factor {factor:g}"
    return {"replicas": n_rep, "policy": name, "users": users, "hit_rate": stats["hit"] / stats["prompt"],
            "ttft_p50": percentile(ttft, 0.5), "ttft_p99": percentile(ttft, 0.99),
            "ttft_p99_later": percentile(ttft_later, 0.99),
            "tok_s": gen_tok / t_end, "users_per_replica": sorted(per_replica, reverse=True),
            "users_moved": sum(1 for u in range(users) if len(served_by[u]) > 1)}


def compare(a, costs):
    """The model beside real runs of the same workload (give route_sim the workload's parameters)."""
    policy = {"roundrobin": "round-robin", "leastconn": "least-conn", "sticky": "sticky", "session": "session-hash"}
    print("| replicas | routing | hit rate real / model | TTFT p50 s real / model | TTFT p99 s real / model | "
          "p99 later turns s real / model | tok/s real / model |")
    print("|---|---|---|---|---|---|---|")
    for r in json.load(open(a.compare)):
        if r["router"] != "haproxy" or r["replicas"] < 2:
            continue
        w = r.get("workload")
        mine = {"users": r["replicas"] * a.users_per_replica, "turns": a.turns, "think": a.think, "spread": a.spread,
                "seed": a.seed}
        if w is None or any(w[k] != v for k, v in mine.items()):
            sys.exit(f"route_sim: {a.compare} ran another workload ({w}); give the model the same {mine}")
        m = simulate(a, costs, r["replicas"], policy[r["routing"]], a.seed, r.get("bf", 150) / 100)
        name = r["routing"] + (f", factor {r['bf']}" if r["routing"] == "session" else "")
        print(f"| {r['replicas']} | {name} | {r['hit_rate']:.2f} / {m['hit_rate']:.2f} | {r['ttft_p50']:.2f} / "
              f"{m['ttft_p50']:.2f} | {r['ttft_p99']:.1f} / {m['ttft_p99']:.1f} | {r['ttft_p99_later']:.1f} / "
              f"{m['ttft_p99_later']:.1f} | {r['tok_s']:.0f} / {m['tok_s']:.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--measure", default="", help="measure a real replica and write the costs here")
    ap.add_argument("-m", default=os.path.join(ROOT, "models", "smollm2-135m-instruct-q4_1.gguf"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--costs", default="")
    ap.add_argument("--replicas", default="2,8,32,128")
    ap.add_argument("--users-per-replica", type=int, default=4)
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--system", type=int, default=1000, help="shared system prompt tokens")
    ap.add_argument("--doc-tokens", type=int, default=0, help="a document of the user's own in the first turn")
    ap.add_argument("--user-tokens", type=int, default=40)
    ap.add_argument("--answer-tokens", type=int, default=100)
    ap.add_argument("--think", type=float, default=2.0, help="mean seconds between an answer and the next turn")
    ap.add_argument("--spread", type=float, default=5.0, help="users start within this many seconds")
    ap.add_argument("--max-running", type=int, default=16)
    ap.add_argument("--cache-tokens", type=int, default=40000, help="prefix cache per replica, in tokens")
    ap.add_argument("--kv-mem", type=float, default=0, help="KV MiB per replica (sets --cache-tokens)")
    ap.add_argument("--kv-bytes-per-token", type=int, default=23040, help="with --kv-mem (SmolLM2, f16: 23040)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--balance-factor", default="1.5", help="session hashing's load bounds to try, e.g. 1.5,2,3")
    ap.add_argument("--compare", default="", help="bench/cluster_load.py results (--json) to set beside the model")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if a.measure:
        measure(a)
        return
    if not a.costs:
        sys.exit("route_sim: --costs FILE (from --measure) is required")
    costs = json.load(open(a.costs))
    if a.kv_mem:
        a.cache_tokens = int(a.kv_mem * 2**20 / a.kv_bytes_per_token)
    if a.compare:
        compare(a, costs)
        return
    rows = []
    for n in [int(x) for x in a.replicas.split(",")]:
        for policy in ("round-robin", "least-conn", "sticky"):
            rows.append(simulate(a, costs, n, policy, a.seed))
        for f in a.balance_factor.split(","):
            rows.append(simulate(a, costs, n, "session-hash", a.seed, float(f)))
    print(f"\n{a.users_per_replica} users per replica x {a.turns} turns, system prompt {a.system}, document "
          f"{a.doc_tokens}, user {a.user_tokens}, answers {a.answer_tokens} tokens, think {a.think} s, spread "
          f"{a.spread} s, cache {a.cache_tokens} tokens per replica; costs from {costs['model']} ({costs['threads']} threads): "
          f"prompt {costs.get('prompt_a', costs['t_prompt_token']) * 1e3:.3f} ms/token + "
          f"{costs.get('prompt_c', 0) * 1e6:.3f} us x position, decode step {costs['t0'] * 1e3:.1f} ms + "
          f"{costs['t1'] * 1e3:.2f} ms x batch + {costs.get('t2', 0) * 1e6:.3f} us x tokens held\n")
    print("| replicas | routing | prefix hit rate | TTFT p50 s | TTFT p99 s | p99 later turns s | generated tok/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['replicas']} | {r['policy']} | {r['hit_rate']:.2f} | {r['ttft_p50']:.3f} | {r['ttft_p99']:.3f} | "
              f"{r['ttft_p99_later']:.3f} | {r['tok_s']:.0f} |")
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
