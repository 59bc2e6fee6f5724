#!/usr/bin/env python3
"""llama.cpp's own server tests (tools/server/tests) against `leanlm serve`: a peer's test suite.

Usage: llamacpp_server_tests.py LEANLM_BINARY SOURCE_DIR BUILD_DIR [--all]

The tests come from the llama-cpp-python sdist on PyPI (it ships llama.cpp's sources), downloaded
once into SOURCE_DIR/.cache/sdist/ by scripts/llamacpp_sdist.sh (shared with setup.sh --reference
and bench/build_llamacpp.sh); the tests alone are unpacked into BUILD_DIR/llamacpp-server-tests/. Their Python requirements are installed, pinned,
into the project's .venv when missing. leanlm serve runs the default model (Gemma 3 270M) and the
suite drives it as an external server (DEBUG_EXTERNAL=1, PORT=...: utils.ServerProcess then
neither starts nor stops a server, so the settings a test sets on its ServerProcess do not apply).

Only the allow-list below runs: the tests that are model-agnostic and exercise what leanlm serves
(OpenAI chat and completions, /models, /health, /tokenize, errors, API keys). docs/server.md says
why each other test is left out. Exits non-zero if any listed test fails or is not found.
--all runs every test file against the default server and prints pytest's summary per file
(triage; it always exits 0).
"""
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

LEANLM, SRC, BUILD = (os.path.abspath(a) for a in sys.argv[1:4])
RUN_ALL = "--all" in sys.argv[4:]
PY = os.path.join(SRC, ".venv", "bin", "python")
MODEL = os.path.join(SRC, "models", "gemma-3-270m-q4_k_m.gguf")

LLAMA_CPP_PYTHON = "0.3.36"  # the sdist whose vendor/llama.cpp holds the tests
CACHE = os.path.join(BUILD, "llamacpp-server-tests", LLAMA_CPP_PYTHON)
TESTS_IN_SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/tools/server/tests/"
TESTS = os.path.join(CACHE, TESTS_IN_SDIST)

# The suite's requirements.txt, pinned. Modules the project's setup already installs (numpy, openai,
# requests) are installed only when missing: setup.sh pins numpy for its fixtures, and the suite's
# openai/requests pins (~=2.14, ~=2.32) would downgrade what the other tests use.
REQUIREMENTS = {  # import name: pip requirement
    "pytest": "pytest==8.3.5",
    "aiohttp": "aiohttp==3.9.5",
    "filelock": "filelock==3.16.1",
    "wget": "wget==3.2",
    "prometheus_client": "prometheus-client==0.20.0",
    "requests": "requests==2.32.3",
    "openai": "openai==2.14.0",
    "numpy": "numpy==2.4.6",
}

API_KEY = "sk-this-is-the-secret-key"  # test_security.py's TEST_API_KEY
# Server flags common to every phase: a small context, and a cap on what a request that gives no
# max_tokens generates (the suite's tests rely on llama-server's --n-predict for that).
COMMON = ["-c", "1024", "-t", "2"]
MAX_TOKENS = ["--max-tokens", "128"]  # unless the phase sets its own

# (phase, extra leanlm flags, pytest node ids). leanlm, like OpenAI, answers 404 model_not_found
# to a model name it does not serve, where llama-server ignores the name: each phase serves the
# name its tests send (the openai-client tests send gpt-3.5-turbo-instruct, test_security's
# gpt-3.5-turbo; test_server_models expects the preset's alias tinyllama-2).
PHASES = [
    ("default", ["--model-id", "gpt-3.5-turbo-instruct"], [
        "unit/test_basic.py::test_server_start_simple",
        "unit/test_chat_completion.py::test_invalid_chat_completion_req[None]",
        "unit/test_chat_completion.py::test_invalid_chat_completion_req[string]",
        "unit/test_chat_completion.py::test_invalid_chat_completion_req[messages2]",
        "unit/test_chat_completion.py::test_invalid_chat_completion_req[messages3]",
        "unit/test_chat_completion.py::test_invalid_chat_completion_req[messages4]",
        "unit/test_chat_completion.py::test_invalid_chat_completion_req[messages5]",
        "unit/test_chat_completion.py::test_invalid_chat_completion_req[messages6]",
        "unit/test_chat_completion.py::test_logprobs",
        "unit/test_chat_completion.py::test_logprobs_stream",
        # invalid response formats (and max_tokens 0) get 400 with an error body
        "unit/test_chat_completion.py::test_completion_with_response_format[response_format4-0-None]",
        "unit/test_chat_completion.py::test_completion_with_response_format[response_format5-0-None]",
        "unit/test_chat_completion.py::test_completion_with_response_format[response_format6-0-None]",
        "unit/test_chat_completion.py::test_completion_with_response_format[response_format7-0-None]",
        # a plain chat, whole and streamed (one choice, non-empty content deltas, no tool calls)
        "unit/test_tool_call.py::test_completion_without_tool_call_fast"
        "[meta-llama-Llama-3.3-70B-Instruct-128-tools0-None-CompletionMode.NORMAL]",
        "unit/test_tool_call.py::test_completion_without_tool_call_fast"
        "[meta-llama-Llama-3.3-70B-Instruct-128-tools0-None-CompletionMode.STREAMED]",
        # tools offered with tool_choice "none": a plain answer, no tool calls
        "unit/test_tool_call.py::test_completion_without_tool_call_fast"
        "[meta-llama-Llama-3.3-70B-Instruct-128-tools2-none-CompletionMode.NORMAL]",
        "unit/test_tool_call.py::test_completion_without_tool_call_fast"
        "[meta-llama-Llama-3.3-70B-Instruct-128-tools2-none-CompletionMode.STREAMED]",
        "unit/test_tokenize.py::test_tokenize_detokenize",
        "unit/test_tokenize.py::test_tokenize_with_pieces",
    ]),
    # A completion stream that ends at the length limit: a limit of 8 tokens, so that the model
    # (sampling at temperature 1) is unlikely to end it first (at 128 tokens it did 1 time in 15).
    ("short", ["--model-id", "gpt-3.5-turbo-instruct", "--max-tokens", "8"], [
        "unit/test_ctx_shift.py::test_ctx_shift_disabled_stream",
    ]),
    ("alias", ["--model-id", "tinyllama-2"], [
        "unit/test_basic.py::test_server_models",
    ]),
    ("api-key", ["--model-id", "gpt-3.5-turbo", "--api-key", API_KEY], [
        "unit/test_security.py::test_access_public_endpoint[/health]",
        "unit/test_security.py::test_openai_library_correct_api_key",
    ]),
]


def say(msg):
    print(f"llamacpp_server_tests: {msg}", flush=True)


def fetch_tests():
    if os.path.exists(os.path.join(TESTS, "conftest.py")):
        return
    os.makedirs(CACHE, exist_ok=True)
    say(f"llama-cpp-python {LLAMA_CPP_PYTHON} sdist (llama.cpp's server tests): .cache/sdist/, from PyPI if not there")
    sdist = subprocess.run(["bash", os.path.join(SRC, "scripts", "llamacpp_sdist.sh"), PY, LLAMA_CPP_PYTHON],
                           check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    with tarfile.open(sdist) as t:  # only the tests: the sdist is 76 MB, they are 0.5 MB
        members = [m for m in t.getmembers() if m.name.startswith(TESTS_IN_SDIST)]
        if not members:
            raise SystemExit(f"{sdist} has no {TESTS_IN_SDIST}")
        t.extractall(CACHE, members=members, filter="data")


def install_requirements():
    missing = [req for mod, req in REQUIREMENTS.items()
               if subprocess.run([PY, "-c", f"import {mod}"], capture_output=True).returncode != 0]
    if missing:
        say("installing " + " ".join(missing))
        subprocess.run([PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", *missing], check=True)


def start(extra):
    tmp = tempfile.mkdtemp()
    ready = os.path.join(tmp, "ready")
    log = open(os.path.join(tmp, "server.log"), "w+")
    flags = [*COMMON, *([] if "--max-tokens" in extra else MAX_TOKENS), *extra]
    proc = subprocess.Popen([LEANLM, "serve", "-m", MODEL, "--port", "0", "--ready-file", ready, *flags],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not os.path.exists(ready):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            log.seek(0)
            raise SystemExit("leanlm serve did not get ready:\n" + log.read())
        time.sleep(0.05)
    with open(ready) as f:
        return proc, int(f.read()), log


def stop(proc, log):
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "killed after 30 s"
    if rc != 0:
        log.seek(0)
        raise SystemExit(f"leanlm serve exited {rc} on SIGTERM:\n" + log.read())


def pytest(port, args):
    env = {**os.environ, "DEBUG_EXTERNAL": "1", "PORT": str(port)}
    return subprocess.run([PY, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=TESTS, env=env).returncode


def main():
    fetch_tests()
    install_requirements()
    if RUN_ALL:
        proc, port, log = start(PHASES[0][1])
        try:
            for name in sorted(os.listdir(os.path.join(TESTS, "unit"))):
                if name.startswith("test_") and name.endswith(".py"):
                    say(f"--all: unit/{name}")
                    pytest(port, ["-q", "--tb=no", "-rA", f"unit/{name}"])
        finally:
            stop(proc, log)
        return 0
    failed = []
    for phase, extra, ids in PHASES:
        say(f"phase {phase}: leanlm serve ... {' '.join(extra)}; {len(ids)} tests")
        proc, port, log = start(extra)
        try:
            # -rA lists every test's outcome; pytest exits 4 when a listed id does not exist.
            rc = pytest(port, ["-v", "-rA", "--tb=short", *ids])
        finally:
            stop(proc, log)
        if rc != 0:
            failed.append(f"{phase} (pytest exit {rc})")
    if failed:
        say("FAILED: " + ", ".join(failed))
        return 1
    say(f"all {sum(len(p[2]) for p in PHASES)} allow-listed llama.cpp server tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
