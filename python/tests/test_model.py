"""leanlm.Model against the CLI (same engine) and against its own contracts: streaming, OpenAI
shapes, stop strings, KV bytes, errors, the GIL and Ctrl-C."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import leanlm
from conftest import ROOT, THREADS, cli_tokens, run_cli

PROMPT = "The capital of France is"


def test_tokenize_matches_the_cli(model):
    for text in ["Hello world", "  two  spaces, émigré ünïcode 日本語", "<start_of_turn>user\nhi<end_of_turn>"]:
        assert model.tokenize(text, special=True) == cli_tokens(text)
        assert model.tokenize(text, add_bos=False, special=False) == cli_tokens(text, "--no-bos", "--no-special")
        assert model.detokenize(model.tokenize(text, add_bos=False)) == text


def test_detokenize_refuses_ids_outside_the_vocabulary(model):
    with pytest.raises(ValueError, match="out of range"):
        model.detokenize([1, model.n_vocab])
    with pytest.raises(ValueError, match="out of range"):
        model.generate([2, -1], max_tokens=1)


def test_greedy_text_matches_leanlm_run(model):
    text = model.generate(PROMPT, max_tokens=24, temperature=0)
    cli = run_cli("run", "-p", PROMPT, "-n", "24", "--temp", "0", "-t", str(THREADS), "-c", "1024").stdout
    assert cli == PROMPT + text + "\n"
    assert len(model.tokenize(text, add_bos=False)) >= 12  # it generated, and the CLI agrees on every piece


def test_stream_yields_the_same_text_piece_by_piece(model):
    whole = model.generate(PROMPT, max_tokens=20, temperature=0)
    s = model.generate(PROMPT, max_tokens=20, temperature=0, stream=True)
    assert isinstance(s, leanlm.Stream)
    pieces = list(s)
    assert len(pieces) >= 10 and all(pieces)
    assert "".join(pieces) == whole == s.text
    assert s.finish_reason == "length" and s.completion_tokens == 20
    assert s.prompt_tokens == len(model.tokenize(PROMPT))


def test_same_seed_same_text_and_another_seed_differs(model):
    a = model.generate("Once upon a time", max_tokens=24, temperature=1.0, seed=7)
    b = model.generate("Once upon a time", max_tokens=24, temperature=1.0, seed=7)
    c = [model.generate("Once upon a time", max_tokens=24, temperature=1.0, seed=s) for s in (8, 9, 10)]
    assert a == b
    assert any(x != a for x in c)


def test_two_streams_interleaved_on_one_model_match_each_alone(model):
    p1, p2 = "The capital of France is", "Water boils at"
    alone = [model.generate(p, max_tokens=12, temperature=0) for p in (p1, p2)]
    s1 = model.generate(p1, max_tokens=12, temperature=0, stream=True)
    s2 = model.generate(p2, max_tokens=12, temperature=0, stream=True)
    out = ["", ""]
    live = [True, True]
    while any(live):
        for i, s in enumerate((s1, s2)):
            if live[i]:
                try:
                    out[i] += next(s)
                except StopIteration:
                    live[i] = False
    assert out == alone


def test_stop_string_ends_the_text_before_it(model):
    whole = model.generate(PROMPT, max_tokens=24, temperature=0)
    words = whole.split()
    stop = words[len(words) // 2]
    cut = model.generate(PROMPT, max_tokens=24, temperature=0, stop=[stop])
    assert cut == whole[: whole.index(stop)]
    s = model.generate(PROMPT, max_tokens=24, temperature=0, stop=stop, stream=True)
    assert "".join(s) == cut and s.finish_reason == "stop"


def test_chat_completion_has_openai_shape_and_streams_the_same_content(model):
    msgs = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2 + 2?"}]
    r = model.create_chat_completion(msgs, max_tokens=16, temperature=0)
    assert r["object"] == "chat.completion" and r["id"].startswith("chatcmpl-")
    choice = r["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    content = choice["message"]["content"]
    assert content
    u = r["usage"]
    assert u["prompt_tokens"] == len(model.tokenize(model.format_chat(msgs), special=True))
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and u["completion_tokens"] >= 1
    assert u["kv_bytes"] > 0
    chunks = list(model.create_chat_completion(msgs, max_tokens=16, temperature=0, stream=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == content
    assert chunks[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]
    json.dumps(r), json.dumps(chunks)  # plain JSON all through


def test_chat_reply_matches_leanlm_run_chat(model):
    r = model.create_chat_completion([{"role": "user", "content": "Name a colour."}], max_tokens=12, temperature=0)
    cli = run_cli("run", "--chat", "-p", "Name a colour.", "-n", "12", "--temp", "0", "-t", str(THREADS), "-c", "1024")
    assert cli.stdout == r["choices"][0]["message"]["content"] + "\n"


def test_completion_shape(model):
    r = model(PROMPT, max_tokens=8, temperature=0)
    assert r["object"] == "text_completion" and r["choices"][0]["text"] == model.generate(PROMPT, 8, temperature=0)
    chunks = list(model.create_completion(PROMPT, max_tokens=8, temperature=0, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == r["choices"][0]["text"]


def test_bad_messages_are_value_errors(model):
    for bad in [[], "hi", [{"role": "robot", "content": "x"}], [{"role": "user", "content": 3}], [42]]:
        with pytest.raises(ValueError):
            model.create_chat_completion(bad)


def test_bad_sampling_arguments_are_value_errors(model):
    for kw in [{"temperature": -1}, {"top_p": 1.5}, {"min_p": -0.1}, {"max_tokens": -2}, {"top_k": -1},
               {"repeat_penalty": 0}]:
        with pytest.raises(ValueError):
            model.generate(PROMPT, **kw)


def test_perplexity_matches_leanlm_perplexity(model, hamlet):
    text = hamlet[:30000]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(text)
    try:
        out = run_cli("perplexity", "-f", f.name, "-c", "128", "--chunks", "4", "-t", str(THREADS), "--json")
    finally:
        os.unlink(f.name)
    ref = json.loads(out.stdout)["ppl"]
    ppl = model.perplexity(text, n_ctx=128, max_chunks=4)
    assert ppl == pytest.approx(ref, rel=1e-9)
    assert 5 < ppl < 200
    with pytest.raises(ValueError, match="larger than the model's context"):
        model.perplexity(text, n_ctx=4096)
    with pytest.raises(leanlm.LeanlmError, match="less than one chunk"):
        model.perplexity("too short", n_ctx=128)


def test_kv_bytes_follow_the_generation_and_the_codec(model):
    prompt = "word " * 300
    assert model.kv_bytes_in_use == 0
    s = model.generate(prompt, max_tokens=4, temperature=0, ignore_eos=True, stream=True)
    next(s)
    live = model.kv_bytes_in_use
    assert live > 0 and s.kv_bytes == live
    list(s)
    assert model.kv_bytes_in_use == 0 and s.kv_bytes == live  # freed at the end, the figure kept
    kivi = leanlm.Model("gemma3-270m", n_ctx=1024, threads=THREADS, kv_codec="kivi2:r=32")
    assert kivi.kv_config.startswith("kivi2")
    k = kivi.generate(prompt, max_tokens=4, temperature=0, ignore_eos=True, stream=True)
    list(k)
    assert 0 < k.kv_bytes < live / 2


def test_engine_errors_carry_the_engine_message(tmp_path):
    with pytest.raises(leanlm.LeanlmError, match="unknown KV codec|kv.codec|codec"):
        leanlm.Model("gemma3-270m", kv_codec="nonsense")
    with pytest.raises(leanlm.LeanlmError, match="no-such-file.gguf"):
        leanlm.Model(str(tmp_path / "no-such-file.gguf"))
    src = pathlib.Path(leanlm.Model("gemma3-270m", n_ctx=64, threads=1).path).read_bytes()
    cut = tmp_path / "truncated.gguf"
    cut.write_bytes(src[: len(src) // 3])
    with pytest.raises(leanlm.LeanlmError):
        leanlm.Model(str(cut))
    with pytest.raises(leanlm.LeanlmError, match="kv.budget"):
        leanlm.Model("gemma3-270m", kv_evict="h2o")
    with pytest.raises(ValueError, match="kv_mem"):
        leanlm.Model("gemma3-270m", kv_mem="lots")


def test_prompt_longer_than_the_context_and_a_kv_budget_too_small(model):
    with pytest.raises(leanlm.LeanlmError, match="context"):
        model.generate("word " * 1100, max_tokens=4)
    small = leanlm.Model("gemma3-270m", n_ctx=1024, threads=THREADS, kv_mem="16MiB")  # the sliding layers' rings take 15.8 MiB up front
    with pytest.raises(leanlm.LeanlmError, match="KV|budget|memory"):
        small.generate("word " * 500, max_tokens=4)
    assert small.generate(PROMPT, max_tokens=2, temperature=0)  # the model is still usable afterwards


def test_context_end_is_a_length_finish():
    m = leanlm.Model("gemma3-270m", n_ctx=32, threads=THREADS)
    s = m.generate(PROMPT, max_tokens=None, temperature=0, ignore_eos=True, stream=True)
    list(s)
    assert s.finish_reason == "length" and s.prompt_tokens + s.completion_tokens == 33


def test_the_gil_is_released_while_the_engine_computes(model, hamlet):
    ticks = 0
    done = threading.Event()

    def count():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    try:
        t0 = time.perf_counter()
        model.perplexity(hamlet[:60000], n_ctx=512, max_chunks=2)  # one engine call per chunk
        elapsed = time.perf_counter() - t0
    finally:
        done.set()
        t.join()
    # With the GIL held through each chunk the counter would stop for whole chunks; released, it
    # ticks about once a millisecond (sleep granularity) all through.
    assert elapsed > 0.2
    assert ticks > elapsed * 1000 * 0.25, (ticks, elapsed)


CTRL_C_CHILD = r"""
import os, signal, sys, time, leanlm
m = leanlm.Model("gemma3-270m", n_ctx=2048, threads=2)
mode = sys.argv[1]
t0 = None
try:
    if mode == "stream":
        for i, piece in enumerate(m.generate("Once upon a time", max_tokens=100000 // 50, ignore_eos=True, stream=True)):
            if i == 3:
                t0 = time.perf_counter()
                os.kill(os.getpid(), signal.SIGINT)
    elif mode == "prefill":  # a long prompt in small batches: the interrupt lands inside the engine call
        import threading
        m = leanlm.Model("gemma3-270m", n_ctx=2048, threads=2, batch=8)
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        t0 = time.perf_counter() + 0.5
        m.generate("word " * 1800, max_tokens=4)
    else:  # one call that returns only at the end: Ctrl-C must still stop it
        import threading
        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        t0 = time.perf_counter() + 1.0
        m.generate("Once upon a time", max_tokens=2000, ignore_eos=True)
    print("not interrupted", flush=True)
except KeyboardInterrupt:
    print("interrupted after %.3f s" % (time.perf_counter() - t0), flush=True)
    print("kv in use", m.kv_bytes_in_use, flush=True)
    print("again:", repr(m.generate("Hello", max_tokens=3, temperature=0)), flush=True)
"""


@pytest.mark.parametrize("mode", ["stream", "whole", "prefill"])
def test_ctrl_c_stops_a_generation(mode):
    p = subprocess.run([sys.executable, "-c", CTRL_C_CHILD, mode], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("interrupted after"), p.stdout + p.stderr
    assert float(lines[0].split()[2]) < 2.0  # within a few decode steps, not at the end of 2000 tokens
    assert lines[1] == "kv in use 0"  # the interrupted generation's KV was freed
    assert lines[2].startswith("again: '") and len(lines[2]) > len("again: ''")


def test_readme_python_example_runs():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python\n") + len("```python\n")
    code = readme[start: readme.index("```", start)]
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.strip()) > 10, p.stdout


def test_the_package_type_checks_against_the_generated_stubs(tmp_path):
    """_core.pyi is written from the built module (nanobind's stubgen); mypy --strict over the
    installed package checks every call of the Python layer into the engine against it."""
    pkg = pathlib.Path(leanlm.__file__).parent
    assert (pkg / "py.typed").exists() and (pkg / "_core.pyi").exists()
    assert "def start(self, prompt:" in (pkg / "_core.pyi").read_text()
    p = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "-p", "leanlm"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
