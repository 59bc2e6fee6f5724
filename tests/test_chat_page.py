#!/usr/bin/env python3
"""The chat page at / of `leanlm serve`, in headless Chromium (Debian's chromium and chromedriver,
driven by selenium): the page loads with the server's model and KV codecs, a reply streams in piece
by piece and ends as the server's own greedy answer, the stats show tok/s and KV bytes, Stop ends a
generation (the server cancels it), the conversation survives a reload (localStorage), and the
browser logs no errors.

Usage: test_chat_page.py LEANLM_BINARY SOURCE_DIR [SCREENSHOT.png]
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import StaleElementReferenceException

LEANLM, SRC = sys.argv[1], sys.argv[2]
SHOT = sys.argv[3] if len(sys.argv) > 3 else None
MODEL = os.path.join(SRC, "models", "gemma-3-270m-q4_k_m.gguf")
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Greedy decoding keeps counting for hundreds of tokens from this request on the default model, so
# a reply is long enough to see it stream and to stop it in the middle on any CPU.
COUNT = "Count from 1 to 300, one number per line."


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what, flush=True)


def start_server():
    tmp = tempfile.mkdtemp()
    ready = os.path.join(tmp, "ready")
    proc = subprocess.Popen([LEANLM, "serve", "-m", MODEL, "--model-id", "gemma3-270m", "--port", "0", "-c", "2048",
                             "-t", "2", "--kv-allow", "kivi4,q8_0", "--ready-file", ready],
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not os.path.exists(ready) or not open(ready).read().strip():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    return proc, int(open(ready).read())


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"metric {name} missing")


def browser():
    for path in (CHROMIUM, DRIVER):
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: scripts/setup.sh installs chromium and chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,760",
              "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def wait_for(what, fn, timeout=60.0, every=0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(every)
    raise AssertionError("timed out waiting for " + what)


def replies(d):
    return d.find_elements(By.CSS_SELECTOR, ".msg.assistant")


def last_reply(d):
    r = replies(d)
    return r[-1] if r else None


def streaming(el):
    """Whether this bubble is still streaming (the page redraws the conversation when a reply ends)."""
    try:
        return "streaming" in el.get_attribute("class")
    except StaleElementReferenceException:
        return False


def reply_text(el):
    return el.find_element(By.CSS_SELECTOR, ".text").text


def set_field(d, id_, value):
    el = d.find_element(By.ID, id_)
    d.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'))", el, value)


def send(d, text):
    box = d.find_element(By.ID, "prompt")
    box.send_keys(text)
    d.find_element(By.ID, "send").click()


def errors_in_log(d):
    return [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]


def main():
    proc, port = start_server()
    d = browser()
    try:
        base = f"http://127.0.0.1:{port}/"
        d.get(base)
        check(d.title == "leanlm chat", "the page loads at /")
        wait_for("the model list", lambda: "ready" in d.find_element(By.ID, "status").text)
        models = [o.text for o in d.find_elements(By.CSS_SELECTOR, "#model option")]
        codecs = [o.text for o in d.find_elements(By.CSS_SELECTOR, "#kv-codec option")]
        check(models == ["gemma3-270m"], f"the model picker lists the server's model ({models})")
        check(codecs[0] == "f16" and sorted(codecs[1:]) == ["kivi4", "q8_0"],
              f"the KV codec picker lists what the server allows, its default first ({codecs})")

        # 1. A reply streams in: the text grows while the request runs, several times.
        set_field(d, "temperature", "0")
        set_field(d, "max-tokens", "48")
        send(d, COUNT)
        el = wait_for("the assistant's bubble", lambda: last_reply(d))
        seen, live_stats = [], []
        while streaming(el):
            try:
                t = reply_text(el)
            except StaleElementReferenceException:
                break
            if t and (not seen or t != seen[-1]):
                seen.append(t)
                live_stats.append(d.find_element(By.ID, "stats").text)
            time.sleep(0.01)
        el = last_reply(d)
        final = reply_text(el)
        check(len(seen) >= 4 and all(final.startswith(s) for s in seen),
              f"the reply grew in {len(seen)} steps while streaming, each a prefix of the final text")
        check(any("tok/s" in s and "KV " in s for s in live_stats), f"tok/s and KV bytes shown live ({live_stats[-1]!r})")
        ref = post(port, "/v1/chat/completions", {"messages": [{"role": "user", "content": COUNT}], "max_tokens": 48,
                                                   "temperature": 0})
        check(final == ref["choices"][0]["message"]["content"].strip() or
              final == ref["choices"][0]["message"]["content"],
              "the streamed reply is the server's greedy answer")
        meta = el.find_element(By.CSS_SELECTOR, ".meta").text
        check("48 tokens" in meta and "KV " in meta and "f16" in meta, f"the reply's stats: {meta!r}")

        # 2. Stop ends a generation in the middle; the server cancels it.
        cancelled0 = metric(port, "leanlm:requests_cancelled_total")
        set_field(d, "max-tokens", "1500")
        send(d, COUNT + " Then again from 300 down to 1.")
        wait_for("a few pieces of the second reply", lambda: len(replies(d)) == 2 and streaming(replies(d)[1]) and len(reply_text(replies(d)[1])) > 20)
        d.find_element(By.ID, "stop").click()
        wait_for("the reply to end", lambda: not streaming(replies(d)[1]), timeout=5)
        stopped_at = reply_text(replies(d)[1])
        time.sleep(1.0)
        check(reply_text(replies(d)[1]) == stopped_at, "Stop ends the reply: no text after it")
        check(not d.find_element(By.ID, "send").get_attribute("disabled") and d.find_element(By.ID, "stop").get_attribute("disabled"),
              "after Stop the page takes a new message")
        meta2 = replies(d)[1].find_element(By.CSS_SELECTOR, ".meta").text
        check("stopped" in meta2, f"the reply is marked stopped ({meta2!r}; {reply_text(replies(d)[1])[-80:]!r})")
        wait_for("the server to cancel the request",
                 lambda: metric(port, "leanlm:requests_cancelled_total") >= cancelled0 + 1, timeout=15, every=0.2)
        check(True, "the server cancelled the stopped request")

        # 3. Another KV codec for the next turn, the whole conversation sent again.
        set_field(d, "kv-codec", "kivi4")
        set_field(d, "max-tokens", "8")
        send(d, "Thanks!")
        wait_for("the third reply", lambda: len(replies(d)) == 3 and not streaming(replies(d)[2]))
        meta3 = replies(d)[2].find_element(By.CSS_SELECTOR, ".meta").text
        check("kivi4" in meta3 and "error" not in reply_text(replies(d)[2]), f"a turn with the kivi4 cache ({meta3!r})")

        # 4. The conversation is kept in the browser across a reload.
        before = [m.text for m in d.find_elements(By.CSS_SELECTOR, ".msg")]
        if SHOT:
            d.save_screenshot(SHOT)
        d.refresh()
        wait_for("the page after a reload", lambda: "ready" in d.find_element(By.ID, "status").text)
        after = [m.text for m in d.find_elements(By.CSS_SELECTOR, ".msg")]
        check(len(before) == 6 and after == before, "the conversation survives a reload (localStorage)")
        check(d.find_element(By.ID, "kv-codec").get_attribute("value") == "kivi4", "the codec choice survives a reload")
        d.find_element(By.ID, "new-chat").click()
        check(not d.find_elements(By.CSS_SELECTOR, ".msg"), "New chat clears the conversation")

        errs = errors_in_log(d)
        check(not errs, f"no errors in the browser console ({errs})")
    finally:
        d.quit()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print("chat page: all checks passed")


if __name__ == "__main__":
    main()
