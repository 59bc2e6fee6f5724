"""Shared fixtures: the installed package against the CLI built beside it (build/leanlm), which is
the reference for tokens, greedy text and perplexity (both run the same engine; the CLI is tested
against llama.cpp in tests/)."""
import json
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI = ROOT / "build" / "leanlm"
THREADS = 2


def run_cli(*args: str) -> subprocess.CompletedProcess:
    assert CLI.exists(), f"{CLI} is missing: build the project first (scripts/setup.sh)"
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=600, check=True)


@pytest.fixture(scope="session")
def model():
    import leanlm
    return leanlm.Model("gemma3-270m", n_ctx=1024, threads=THREADS)


@pytest.fixture(scope="session")
def hamlet() -> str:
    path = ROOT / "data" / "hamlet.txt"
    assert path.exists(), "data/hamlet.txt is missing (scripts/setup.sh writes it)"
    return path.read_text()


def cli_tokens(text: str, *flags: str):
    return json.loads(run_cli("tokenize", "-p", text, *flags).stdout)
