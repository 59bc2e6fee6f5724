#!/usr/bin/env python3
"""`leanlm serve` as a real process on loopback, driven by the official openai client and plain HTTP.

Usage: test_server_api.py LEANLM_BINARY SOURCE_DIR
Checks the OpenAI endpoints (chat, streaming, completions, logprobs, models), errors (400, 401, 404,
413, 429), per-request KV codecs, /tokenize, /metrics, cancellation of a stream whose client left,
prefix reuse (time to first token, equal output) and a graceful SIGTERM. Exits non-zero on the first failure.
"""
import http.client as httpclient
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import openai
from openai import OpenAI

LEANLM, SRC = sys.argv[1], sys.argv[2]
MODEL = os.path.join(SRC, "models", "smollm2-135m-instruct-q4_1.gguf")
MODEL_ID = "smollm2"
# Greedy decoding counts on for hundreds of tokens from this prompt (no early end of turn), so
# requests that must still be running later are long enough on any CPU.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"


def start(*extra, ctx=1024, env=None):
    tmp = tempfile.mkdtemp()
    ready = os.path.join(tmp, "ready")
    args = [LEANLM, "serve", "-m", MODEL, "--model-id", MODEL_ID, "--port", "0", "-c", str(ctx),
            "--ready-file", ready, *extra]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    deadline = time.time() + 120
    while not os.path.exists(ready):
        if proc.poll() is not None:
            raise SystemExit("server exited early:\n" + proc.stderr.read())
        if time.time() > deadline:
            proc.kill()
            raise SystemExit("server not ready after 120 s")
        time.sleep(0.05)
    with open(ready) as f:
        port = int(f.read())
    return proc, port


def http(port, method, path, body=None, headers=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(port, name):
    _, text = http(port, "GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} missing")


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


DENSE = {}  # the main server's greedy answer to its first chat request (compared with --kv-topk)


def main_server_checks(port):
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    msgs = [{"role": "user", "content": "Name three colors."}]

    models = client.models.list()
    check([m.id for m in models.data] == [MODEL_ID], "models.list names the served model")

    r = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=24, temperature=0)
    text = r.choices[0].message.content
    DENSE["text"] = text
    check(r.object == "chat.completion" and len(text) > 0, "chat completion returns text")
    check(r.choices[0].finish_reason in ("stop", "length"), "finish_reason is stop or length")
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens and r.usage.completion_tokens > 0,
          "usage adds up")

    chunks = list(client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(streamed == text, "streamed chat equals the non-streamed text (greedy)")
    opening = chunks[0].choices[0]
    check(opening.delta.role == "assistant" and opening.delta.content is None and opening.logprobs is None
          and all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices),
          "the stream opens with the role alone (no text), and only that chunk has the role")
    check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens,
          "the last stream chunk carries usage")
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check(finals == [r.choices[0].finish_reason], "exactly one chunk has the finish_reason")

    c = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=6, temperature=0,
                                  logprobs=2)
    lp = c.choices[0].logprobs
    check(len(lp.tokens) == c.usage.completion_tokens and len(lp.token_logprobs) == len(lp.tokens),
          "completion logprobs: one entry per generated token")
    check(all(len(t) <= 2 for t in lp.top_logprobs) and all(v <= 0 for v in lp.token_logprobs),
          "completion top_logprobs has at most 2 entries, log-probabilities <= 0")
    check("".join(lp.tokens) == c.choices[0].text, "the logprob tokens spell the text")

    r2 = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=5, temperature=0, logprobs=True,
                                        top_logprobs=3)
    check(len(r2.choices[0].logprobs.content) == r2.usage.completion_tokens, "chat logprobs: one entry per token")
    check(all(len(t.top_logprobs) == 3 for t in r2.choices[0].logprobs.content), "chat top_logprobs has 3 entries")

    r3 = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=12, temperature=0,
                                        extra_body={"kv": {"codec": "q8_0"}})
    check(len(r3.choices[0].message.content) > 0, "a request may choose an allowed KV codec")
    try:
        client.chat.completions.create(model=MODEL_ID, messages=msgs, extra_body={"kv": {"codec": "kivi2"}})
        check(False, "a codec the server does not allow is refused")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and e.body["param"] == "kv.codec", "a codec the server does not allow is refused")
    bad_kv_checks(client, port, msgs)
    try:
        client.chat.completions.create(model="gpt-4", messages=msgs)
        check(False, "an unknown model is refused")
    except openai.NotFoundError as e:
        check(e.body["code"] == "model_not_found", "an unknown model gets 404 model_not_found")
    try:
        client.chat.completions.create(model=MODEL_ID, messages=msgs, temperature=5)
        check(False, "temperature 5 is refused")
    except openai.BadRequestError as e:
        check(e.body["param"] == "temperature", "temperature out of range gets 400 naming the parameter")

    status, body = http(port, "POST", "/v1/chat/completions", raw=b"{not json")
    check(status == 400 and json.loads(body)["error"]["code"] == "invalid_json", "malformed JSON gets 400")
    status, body = http(port, "POST", "/v1/completions", raw=json.dumps({"prompt": "x" * 200000}).encode())
    check(status == 413 and "error" in json.loads(body), "a body above --max-body gets 413")
    status, body = http(port, "POST", "/v1/completions", {"prompt": "word " * 3000})
    check(status == 400 and json.loads(body)["error"]["code"] == "context_length_exceeded",
          "a prompt longer than the context gets 400 context_length_exceeded")
    status, body = http(port, "GET", "/v1/nothing")
    check(status == 404 and "error" in json.loads(body), "an unknown path gets a JSON 404")
    # /models and /chat/completions also answer without /v1, as llama-server's do (a base URL without
    # /v1); /completions does not (llama-server answers it in its own, non-OpenAI shape).
    status, body = http(port, "GET", "/models")
    check(status == 200 and [m["id"] for m in json.loads(body)["data"]] == [MODEL_ID], "/models lists the model")
    status, body = http(port, "POST", "/chat/completions", {"messages": msgs, "max_tokens": 2})
    check(status == 200 and json.loads(body)["object"] == "chat.completion", "/chat/completions answers as /v1's")
    status, _ = http(port, "POST", "/completions", {"prompt": "x", "max_tokens": 2})
    check(status == 404, "/completions without /v1 is not served")
    for bad, param in [({"messages": 5}, "messages"), ({"messages": msgs, "max_tokens": -3}, "max_tokens"),
                       ({"messages": msgs, "max_tokens": 10 ** 9}, "max_tokens"),
                       ({"messages": msgs, "temperature": "hot"}, "temperature")]:
        status, body = http(port, "POST", "/v1/chat/completions", bad)
        check(status == 400 and json.loads(body)["error"]["param"] == param, f"400 naming {param} for {bad}")
    status, body = http(port, "POST", "/v1/completions", raw=b'{"prompt": "\xff\xfe broken"}')
    check(status == 400 and json.loads(body)["error"]["code"] == "invalid_json", "invalid UTF-8 in the body gets 400")
    c = client.completions.create(model=MODEL_ID, prompt=COUNTING, max_tokens=40, temperature=0, stop=[" 12,"])
    check(c.choices[0].finish_reason == "stop" and " 12," not in c.choices[0].text and " 11," in c.choices[0].text,
          "a stop string ends the text right before it")

    status, body = http(port, "POST", "/tokenize", {"content": "Hello world"})
    toks = json.loads(body)["tokens"]
    status2, body2 = http(port, "POST", "/detokenize", {"tokens": toks})
    check(status == 200 and status2 == 200 and json.loads(body2)["content"].endswith("Hello world"),
          "tokenize then detokenize gives the text back")
    # with_pieces, as llama-server's (llama.cpp's test_tokenize_with_pieces): ids with their text,
    # or bytes where a token holds part of a UTF-8 character.
    emoji = "Hello world \U0001F917"
    _, plain = http(port, "POST", "/tokenize", {"content": emoji})
    status, body = http(port, "POST", "/tokenize", {"content": emoji, "with_pieces": True})
    pieces = json.loads(body)["tokens"]
    check(status == 200 and [p["id"] for p in pieces] == json.loads(plain)["tokens"]
          and all(isinstance(p["piece"], (str, list)) and len(p["piece"]) > 0 for p in pieces)
          and "world" in "".join(p["piece"] for p in pieces if isinstance(p["piece"], str)),
          "/tokenize with_pieces gives each id with its piece")
    status, body = http(port, "POST", "/v1/chat/completions", {"messages": msgs, "logit_bias": {"42": -100}})
    check(status == 400 and json.loads(body)["error"]["param"] == "logit_bias", "logit_bias is refused, not ignored")

    check(metric(port, "leanlm:time_to_first_token_seconds_count") >= 5, "/metrics counts time to first token")
    check(metric(port, "leanlm:generation_tokens_total") > 0, "/metrics counts generated tokens")
    _, text = http(port, "GET", "/metrics")
    check(f'vllm:num_requests_running{{model_name="{MODEL_ID}"}} 0' in text and
          f'vllm:request_success_total{{model_name="{MODEL_ID}",finished_reason="stop"}}' in text,
          "/metrics also has the vLLM names routers read")

    # A streaming client that leaves mid-answer: its sequence is cancelled and its KV freed.
    before = metric(port, "leanlm:requests_cancelled_total")
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/completions", body=json.dumps(
        {"model": MODEL_ID, "prompt": COUNTING, "max_tokens": 900, "stream": True, "temperature": 0}),
        headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    check(resp.status == 200, "the long stream started")
    resp.readline()
    conn.sock.shutdown(2)
    conn.close()
    deadline = time.time() + 20
    while time.time() < deadline and metric(port, "leanlm:requests_cancelled_total") == before:
        time.sleep(0.1)
    check(metric(port, "leanlm:requests_cancelled_total") == before + 1, "a client that left cancels its request")
    # What stays is the prefix cache's (evictable) KV of earlier requests.
    deadline = time.time() + 5
    while time.time() < deadline and metric(port, "leanlm:kv_cache_bytes") != metric(port, "leanlm:prefix_cache_bytes"):
        time.sleep(0.05)
    check(metric(port, "leanlm:kv_cache_bytes") == metric(port, "leanlm:prefix_cache_bytes"),
          "the cancelled request's KV bytes are freed")


def bad_kv_checks(client, port, msgs):
    """KV choices the server cannot build are refused when the request is parsed: 400 naming the
    field, and neither the prefix cache nor the queue notices them."""
    hits = f'vllm:prefix_cache_hits{{model_name="{MODEL_ID}"}}'
    warm = [{"role": "user", "content": "Say something about the sea, in one sentence."}]
    client.chat.completions.create(model=MODEL_ID, messages=warm, max_tokens=4, temperature=0)  # cached now
    before = {m: metric(port, m) for m in (hits, "leanlm:prefix_cache_entries", "leanlm:requests_failed_total")}
    cases = [({"codec": "f32", "evict": "h2o", "budget": 64}, "kv.evict"),  # f32 takes no eviction
             ({"codec": "q8_0:sinks=2", "evict": "h2o", "budget": 64}, "kv.evict"),  # sinks= with eviction
             ({"evict": "h2o"}, "kv.budget")]
    for kv, field in cases:
        status, body = http(port, "POST", "/v1/chat/completions", {"messages": msgs, "max_tokens": 4, "kv": kv})
        err = json.loads(body).get("error", {})
        check(status == 400 and err.get("param") == field and err.get("type") == "invalid_request_error",
              f"kv {kv} is refused with 400 naming {field} ({err.get('message')})")
    check(metric(port, f'vllm:num_requests_waiting{{model_name="{MODEL_ID}"}}') == 0, "a refused kv leaves nothing in the queue")
    after = {m: metric(port, m) for m in before}
    check(after == before, f"a refused kv changes neither the prefix cache nor the failure count ({after})")
    client.chat.completions.create(model=MODEL_ID, messages=warm, max_tokens=4, temperature=0)
    check(metric(port, hits) > before[hits], "the cached prefix is still there for the next request")


def topk_server_checks(port, dense_text, msgs):
    """A server with sparse decode attention (--kv-topk): below K tokens it is dense attention, so
    greedy text equals the dense server's; above, it answers; eviction does not combine with it."""
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    r = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=24, temperature=0)
    check(r.choices[0].message.content == dense_text, "--kv-topk above the sequence length gives the dense text")
    with open(os.path.join(SRC, "data", "hamlet.txt"), encoding="utf-8") as f:
        prose = f.read()[:2500]
    long = [{"role": "user", "content": prose + "\n\nWho speaks first?"}]
    r = client.chat.completions.create(model=MODEL_ID, messages=long, max_tokens=16, temperature=0)
    check(r.usage.prompt_tokens > 256 and r.usage.completion_tokens > 0,
          f"--kv-topk 256 answers a {r.usage.prompt_tokens}-token prompt")
    status, body = http(port, "POST", "/v1/chat/completions",
                        {"messages": msgs, "max_tokens": 4, "kv": {"evict": "h2o", "budget": 64}})
    check(status == 400 and json.loads(body)["error"]["param"] == "kv.evict",
          "eviction asked of a --kv-topk server is refused naming kv.evict")


def startup_checks():
    """Flag combinations the server cannot serve: exit 1 at start-up with one line naming the problem."""
    cases = [(["--kv-codec", "f32", "--kv-evict", "h2o", "--kv-budget", "64"], "f32"),
             (["--kv-topk", "64", "--kv-evict", "h2o", "--kv-budget", "64"], "--kv-topk"),
             (["--kv-allow", "f32", "--kv-evict", "h2o", "--kv-budget", "64"], "--kv-allow f32"),
             (["--kv-codec", "kivi2:g=96"], "group size"),  # SmolLM2's heads of 64 take no group of 96
             (["--kv-allow", "pq"], "codebooks")]
    for extra, want in cases:
        args = [LEANLM, "serve", "-m", MODEL, "--port", "0", "-c", "256", *extra]
        p = subprocess.run(args, capture_output=True, text=True, timeout=120)
        errors = [line for line in p.stderr.splitlines() if "error" in line or want in line]
        check(p.returncode == 1 and len(errors) == 1 and want in errors[0],
              f"serve {' '.join(extra)} exits 1 with one line: {errors}")


def streamed_chat(client, messages, max_tokens):
    """(seconds to the first token, the whole text) of a greedy streamed chat completion."""
    t0 = time.time()
    ttft, parts = None, []
    for chunk in client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=max_tokens,
                                                temperature=0, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            if ttft is None:
                ttft = time.time() - t0
            parts.append(chunk.choices[0].delta.content)
    return ttft, "".join(parts)


def prefix_reuse_checks(port):
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    # A system prompt of about 1,000 tokens of real prose.
    with open(os.path.join(SRC, "data", "hamlet.txt"), encoding="utf-8") as f:
        prose = f.read()
    chars = 2500
    while True:
        system = "Answer questions about this text.\n\n" + prose[:chars]
        _, body = http(port, "POST", "/tokenize", {"content": system})
        n = len(json.loads(body)["tokens"])
        if n >= 1000:
            break
        chars += 250
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Who speaks first?"}]
    hits_before = metric(port, f'vllm:prefix_cache_hits{{model_name="{MODEL_ID}"}}')
    ttft_cold, text_cold = streamed_chat(client, messages, 24)
    ttft_warm, text_warm = streamed_chat(client, messages, 24)
    ttft_warm = min(ttft_warm, streamed_chat(client, messages, 24)[0])  # the better of two: one hiccup is noise
    print(f"prefix reuse: {n}-token system prompt, time to first token {ttft_cold * 1000:.0f} ms cold, "
          f"{ttft_warm * 1000:.0f} ms with the prefix cached ({ttft_cold / ttft_warm:.1f}x)")
    check(text_warm == text_cold and len(text_cold) > 0, "a repeated request gets the same answer from the cached prefix")
    check(ttft_cold >= 5 * ttft_warm, "the cached prefix cuts the time to first token at least 5x")
    hits = metric(port, f'vllm:prefix_cache_hits{{model_name="{MODEL_ID}"}}') - hits_before
    check(hits >= n, "vllm:prefix_cache_hits counts the reused prompt tokens")
    usage = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=4, temperature=0).usage
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else -1
    check(n - 8 <= cached < usage.prompt_tokens,
          f"usage.prompt_tokens_details.cached_tokens reports the reused prompt tokens ({cached} of {usage.prompt_tokens})")
    # Another question after the same system prompt also skips it.
    other = [messages[0], {"role": "user", "content": "Where does the scene take place?"}]
    ttft_other, _ = streamed_chat(client, other, 8)
    check(ttft_cold >= 3 * ttft_other, "another question after the same system prompt reuses it")


def slow_and_idle_client_checks(port):
    # 200 connections that send nothing: requests are still read and answered at once.
    import socket
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
    t0 = time.time()
    status, _ = http(port, "POST", "/v1/completions", {"model": MODEL_ID, "prompt": "Hello", "max_tokens": 2})
    check(status == 200 and time.time() - t0 < 4.5, "200 idle connections do not hold back a request")
    for s in idle:
        s.close()
    # A request sent byte by byte over 30 s is answered, and others are served meanwhile.
    body = json.dumps({"model": MODEL_ID, "prompt": "Hello", "max_tokens": 2}).encode()
    raw = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    reply = []

    def dribble():
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        for i in range(len(raw)):
            s.sendall(raw[i:i + 1])
            time.sleep(30.0 / len(raw))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        reply.append(data.decode(errors="replace"))

    t = threading.Thread(target=dribble)
    t.start()
    served = 0
    while t.is_alive():
        status, _ = http(port, "POST", "/v1/completions", {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 1})
        served += status == 200
        time.sleep(1)
    t.join()
    check(reply and reply[0].startswith("HTTP/1.1 200") and '"choices"' in reply[0],
          "a request sent byte by byte over 30 s is answered")
    check(served >= 10, f"other requests were served meanwhile ({served})")


def concurrency_checks(port, budget):
    """16 streaming clients at once under a KV budget too small for all of them."""
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    prompts = [f"Fact number {i}: the" for i in range(16)]

    def greedy(prompt):
        return "".join(c.choices[0].text for c in client.completions.create(
            model=MODEL_ID, prompt=prompt, max_tokens=6, temperature=0, stream=True) if c.choices)

    alone = [greedy(p) for p in prompts]
    peak, running, results, errors = [0.0], [0.0], [None] * 16, []
    done = threading.Event()

    def poll():
        try:
            while not done.is_set():
                peak[0] = max(peak[0], metric(port, "leanlm:kv_cache_bytes"))
                running[0] = max(running[0], metric(port, "leanlm:requests_running"))
                time.sleep(0.01)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    def run(i):
        results[i] = greedy(prompts[i])

    poller = threading.Thread(target=poll)
    poller.start()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    poller.join()
    check(all(r is not None and len(r) > 0 for r in results), "16 concurrent streaming clients all complete")
    check(results == alone, "greedy outputs equal the same requests run one at a time")
    check(not errors, f"/metrics was read throughout ({errors})")
    check(0 < running[0] < 16, f"the small KV budget ran them a few at a time (at most {running[0]:.0f})")
    check(0 < peak[0] <= budget, f"the KV budget is never exceeded (peak {peak[0] / 1048576:.1f} MiB)")


def limits_server_checks(port):
    status, _ = http(port, "GET", "/health")
    check(status == 200, "/health is open without the key")
    bad = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0)
    try:
        bad.models.list()
        check(False, "a wrong API key is refused")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, "a wrong API key gets 401")
    good = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sekrit", max_retries=0)
    # One running, one waiting: the third concurrent request is refused with 429 and Retry-After.
    results = []

    def long_request():
        try:
            good.completions.create(model=MODEL_ID, prompt=COUNTING, max_tokens=400, temperature=0)
            results.append("ok")
        except Exception as e:  # noqa: BLE001 - the thread reports what happened
            results.append(repr(e))

    threads = [threading.Thread(target=long_request) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.3)
    status, body = http(port, "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2},
                        headers={"Authorization": "Bearer sekrit"})
    check(status == 429 and json.loads(body)["error"]["type"] == "server_busy", "a full queue answers 429")
    for t in threads:
        t.join()
    check(results == ["ok", "ok"], "the running and the queued request both finish")


def sigterm_checks(proc, port):
    # A stream in flight when SIGTERM arrives still ends properly: finish_reason, then [DONE].
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/v1/completions", body=json.dumps(
        {"model": MODEL_ID, "prompt": COUNTING, "max_tokens": 120, "stream": True, "temperature": 0}),
        headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    lines = [resp.readline().decode()]
    proc.send_signal(signal.SIGTERM)
    status, _ = http(port, "GET", "/health")
    check(status == 503, "/health answers 503 while draining")
    lines += [line.decode() for line in resp]
    events = [line[6:].strip() for line in lines if line.startswith("data: ")]
    check(events and events[-1] == "[DONE]", "a stream in flight at SIGTERM ends with [DONE]")
    reasons = [json.loads(e)["choices"][0]["finish_reason"] for e in events[:-1]]
    check(reasons[-1] in ("stop", "length"), "and with a finish_reason")
    rc = proc.wait(60)
    check(rc == 0, "SIGTERM exits 0")


def main():
    if not os.path.exists(MODEL):
        raise SystemExit(f"{MODEL} missing: run scripts/setup.sh")
    startup_checks()
    proc, port = start("--kv-allow", "q8_0,f32,q8_0:sinks=2", "--max-body", "100000")
    try:
        main_server_checks(port)
        slow_and_idle_client_checks(port)
    finally:
        proc.terminate()
        proc.wait(60)
    proc, port = start("--kv-topk", "256")
    try:
        topk_server_checks(port, DENSE["text"], [{"role": "user", "content": "Name three colors."}])
    finally:
        proc.terminate()
        proc.wait(60)
    # The scalar kernels: a batch and a single token go through the same per-row kernel, so batched
    # greedy outputs must equal the alone ones token for token (SIMD matrix kernels round otherwise).
    proc, port = start("--kv-mem", "16", env={"LEANLM_ISA": "scalar"})
    try:
        concurrency_checks(port, 16 * 1048576)
    finally:
        proc.terminate()
        proc.wait(60)
    proc, port = start("--api-key", "sekrit", "--max-running", "1", "--max-waiting", "1")
    try:
        limits_server_checks(port)
    finally:
        proc.terminate()
        proc.wait(60)
    proc, port = start(ctx=2048)
    try:
        prefix_reuse_checks(port)
    finally:
        proc.terminate()
        proc.wait(60)
    proc, port = start()
    sigterm_checks(proc, port)
    print("all server API checks passed")


if __name__ == "__main__":
    main()
