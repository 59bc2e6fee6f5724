#!/usr/bin/env python3
"""scripts/cluster.py: two `leanlm serve` replicas (one core each) behind HAProxy, on loopback.

Usage: test_cluster.py SOURCE_DIR
Checks that the official openai client's chat, streaming and completions work through the balancer;
that every turn of a conversation (named by the body's "user" field or an X-Session-Id header) lands
on one replica (named by HAProxy's X-Served-By) and its later turns are prefix-cache hits there,
with the default sticky routing (which also spreads new conversations by load) and with consistent
hashing (--routing session); that the vLLM metric names are
present; that when a replica is killed under load, requests sent after it died all succeed and the
replica, started again, rejoins; and that SIGTERM stops everything with exit 0.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from openai import OpenAI

SRC = sys.argv[1]
MODEL = os.path.join(SRC, "models", "smollm2-135m-instruct-q4_1.gguf")
MODEL_ID = "smollm2"


def check(cond, what):
    if not cond:
        raise SystemExit("FAILED: " + what)
    print("ok: " + what, flush=True)


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        out = {}
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out


def admitted(port):
    """Prompt tokens the replica has taken in: counted when a request starts, so a request that is
    still finishing elsewhere cannot make two replicas look busy."""
    return metrics(port)["leanlm:prefix_cache_queries_total"]


def read_ready(path, proc, deadline_s=180, min_starts=None):
    """The cluster's ready file once it says HAProxy routes to every replica (after min_starts starts)."""
    t0 = time.time()
    while time.time() - t0 < deadline_s:
        if proc.poll() is not None:
            raise SystemExit(f"the cluster exited ({proc.returncode})")
        if os.path.exists(path):
            with open(path) as f:
                info = json.load(f)
            if min_starts is None or all(r["starts"] >= s for r, s in zip(info["replicas"], min_starts)):
                return info
        time.sleep(0.1)
    raise SystemExit("cluster not ready")


def affinity_checks(client, ports, conversations):
    """Every turn of each conversation (by `user` or X-Session-Id) on one replica, named by X-Served-By;
    its later turns prefix-cache hits. Returns the replica each conversation went to."""
    system = "You are a patient teacher. " * 40
    where = []
    for user, header in conversations:
        messages = [{"role": "system", "content": system}]
        served, hits, named = [], [], []
        for turn in range(4):
            messages.append({"role": "user", "content": f"Question {turn}: tell me one fact about the number {turn}."})
            before = [admitted(p) for p in ports]
            hits_before = [metrics(p)[f'vllm:prefix_cache_hits{{model_name="{MODEL_ID}"}}'] for p in ports]
            kw = {"user": user} if user else {"extra_headers": {"X-Session-Id": header}}
            raw = client.chat.completions.with_raw_response.create(model=MODEL_ID, messages=messages, max_tokens=16,
                                                                   temperature=0, **kw)
            r = raw.parse()
            named.append(raw.headers.get("x-served-by"))
            messages.append({"role": "assistant", "content": r.choices[0].message.content})
            after = [admitted(p) for p in ports]
            which = [i for i in range(len(ports)) if after[i] > before[i]]
            served.append(which[0] if len(which) == 1 else None)
            hits.append(metrics(ports[which[0]])[f'vllm:prefix_cache_hits{{model_name="{MODEL_ID}"}}'] -
                        hits_before[which[0]] if len(which) == 1 else 0)
        name = user or header
        check(None not in served and len(set(served)) == 1, f"every turn of {name}'s conversation on one replica {served}")
        check(named == [f"r{i}" for i in served], f"HAProxy's X-Served-By names the replica that served it {named}")
        # The system prompt alone is over 200 tokens; a later turn finds at least that.
        check(all(h >= 200 for h in hits[1:]), f"{name}'s later turns are prefix-cache hits {hits}")
        where.append(served[0])
    return where


def start_cluster(ready, *flags):
    return subprocess.Popen([sys.executable, os.path.join(SRC, "scripts", "cluster.py"), "-n", "2", "-m", MODEL,
                             "--port", "0", "--kv-mem", "128", "--maxconn", "8", "--ready-file", ready, *flags,
                             "--", "--model-id", MODEL_ID, "-c", "2048"])


def stop_cluster(proc):
    """SIGTERM, then the cluster's exit status (-1 if it had to be killed after 200 s)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(200)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -1


def main():
    if not os.path.exists(MODEL):
        raise SystemExit(f"{MODEL} missing: run scripts/setup.sh")
    ready = os.path.join(tempfile.mkdtemp(), "ready.json")
    proc = start_cluster(ready)
    try:
        info = read_ready(ready, proc)
        base = info["port"]
        ports = [r["port"] for r in info["replicas"]]
        client = OpenAI(base_url=f"http://127.0.0.1:{base}/v1", api_key="none", max_retries=0)

        # Chat, streaming and completions through the balancer.
        r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Say hello."}],
                                           max_tokens=8, temperature=0)
        check(r.choices[0].message.content and r.usage.completion_tokens > 0, "chat through HAProxy")
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0,
            stream=True) if c.choices)
        check(text == r.choices[0].message.content, "streaming through HAProxy gives the same text")
        c = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=4, temperature=0)
        check(c.choices[0].text != "", "completions through HAProxy")

        # The vLLM names, on each replica.
        for p in ports:
            m = metrics(p)
            names = ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                     "vllm:prefix_cache_queries", "vllm:prefix_cache_hits", "vllm:num_preemptions_total"]
            check(all(f'{n}{{model_name="{MODEL_ID}"}}' in m for n in names) and
                  any(k.startswith("vllm:time_to_first_token_seconds_count") for k in m) and
                  any(k.startswith("vllm:request_success_total") for k in m) and
                  0 <= m[f'vllm:kv_cache_usage_perc{{model_name="{MODEL_ID}"}}'] <= 1,
                  f"replica on {p} exports the vLLM metric names with sane values")

        # Session affinity: every turn of a conversation on one replica, later turns from its cache.
        # The default, --routing sticky: each new conversation is balanced by connections (one after
        # the other here: every replica idle, so HAProxy's leastconn takes them in turn, where a hash
        # might put them all on one), then stays where it went.
        where = affinity_checks(client, ports, [("alice", None), ("bob", None), ("carol", None), (None, "session-dave")])
        check(sorted(where) == [0, 0, 1, 1], f"sticky routing places new conversations on both replicas {where}")

        # A replica killed under load: requests sent after it died all succeed (HAProxy retries
        # them on the other one), and the replica, started again by the cluster, rejoins.
        results = []

        def ask(i):
            try:
                c = client.completions.create(model=MODEL_ID, prompt=f"Story {i}: once upon a time", max_tokens=48,
                                              temperature=0.7, seed=i)
                results.append(("ok", i, c.choices[0].text))
            except Exception as e:  # noqa: BLE001 - recorded and checked below
                results.append(("failed", i, repr(e)))

        in_flight = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in in_flight:
            t.start()
        victim = info["replicas"][0]
        running = 0
        t0 = time.time()
        while running == 0 and time.time() - t0 < 30:  # kill it while it serves requests
            running = metrics(ports[0])[f'vllm:num_requests_running{{model_name="{MODEL_ID}"}}']
            time.sleep(0.02)
        check(running > 0, "the replica to be killed is serving requests")
        os.kill(victim["pid"], signal.SIGKILL)
        after_kill = [threading.Thread(target=ask, args=(100 + i,)) for i in range(8)]
        for t in after_kill:
            t.start()
        for t in in_flight + after_kill:
            t.join()
        late = [r for r in results if r[1] >= 100]
        check(all(r[0] == "ok" for r in late), f"all requests sent after the kill succeed ({late})")
        early_failed = [r for r in results if r[1] < 100 and r[0] != "ok"]
        # Cut off before any response byte, they are retried on the other replica; at most those
        # running on the killed one could be lost.
        check(len(early_failed) <= running, f"only requests in flight on the killed replica may fail "
                                            f"({len(early_failed)} failed, {running:.0f} were running there)")
        info = read_ready(ready, proc, min_starts=[2, 1])
        check(info["replicas"][0]["pid"] != victim["pid"], "the cluster started the killed replica again")
        before = admitted(ports[0])
        threads = [threading.Thread(target=ask, args=(200 + i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check(admitted(ports[0]) > before, "the restarted replica rejoined (it serves requests again)")
    finally:
        rc = stop_cluster(proc)
    check(rc == 0, "SIGTERM stops the cluster with exit 0")

    # --routing session: consistent hashing on the conversation; every turn on one replica too.
    ready = os.path.join(tempfile.mkdtemp(), "ready.json")
    proc = start_cluster(ready, "--routing", "session")
    try:
        info = read_ready(ready, proc)
        client = OpenAI(base_url=f"http://127.0.0.1:{info['port']}/v1", api_key="none", max_retries=0)
        affinity_checks(client, [r["port"] for r in info["replicas"]],
                        [("erin", None), ("frank", None), (None, "session-grace")])
    finally:
        rc = stop_cluster(proc)
    check(rc == 0, "SIGTERM stops the second cluster with exit 0")
    print("all cluster checks passed")


if __name__ == "__main__":
    main()
