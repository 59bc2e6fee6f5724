#!/usr/bin/env python3
"""Produces golden reference outputs from llama.cpp (through llama-cpp-python) for a GGUF model.
leanlm's reference tests compare against these files, so CI need not rebuild llama.cpp.

    python scripts/make_reference.py --model models/gemma-3-270m-q4_k_m.gguf --out tests/golden/gemma3-270m
    python scripts/make_reference.py --chat --model unused --out tests/golden/chat.json
    python scripts/make_fixtures.py --out build/fixtures
    python scripts/make_reference.py --tiny --model build/fixtures/tiny-llama.gguf --out tests/golden/tiny-llama
    python scripts/make_reference.py --tiny --model build/fixtures/tiny-qwen2.gguf --out tests/golden/tiny-qwen2

Writes reference.json (token ids, greedy continuations with their logit gaps, perplexity) and
topk.bin (for every scored position: the K most likely next tokens and their log-probabilities).
"""
import argparse
import hashlib
import json
import math
import pathlib
import sys

import numpy as np
from llama_cpp import Llama

ROOT = pathlib.Path(__file__).resolve().parent.parent

TOKENIZER_CASES = [
    "Hello world",
    " leading space and  double  spaces",
    "Tabs\tand\nnewlines\n\n\nand    runs      of whitespace   \n",
    "Numbers: 3.14159, 1,000,000 and 2026-11-22.",
    "Ünïcödé: naïve café, Straße, façade",
    "日本語のテキストと中文文本，还有한국어 문장.",
    "Русский текст и ελληνικά γράμματα.",
    "Emoji: 😀🚀🎉👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "def f(x):\n    return x ** 2  # square\n\nfor i in range(10):\n\tprint(f(i))\n",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>",
    "HTML <b>bold</b> and <div class=\"x\">div</div>",
    "Mixed: don't, won't, it's, we'll, I'd, they're, you've",
    "\u00a0non-breaking\u2003em-space\u200bzero-width",
    "",
    "   ",
    "a" * 300,
]

GREEDY_PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "To be, or not to be, that is the question:",
    "The three primary colors are",
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# Stray continuation bytes, invalid lead bytes, truncated sequences. (Not overlong forms or encoded
# surrogates: llama.cpp decodes those as code points, leanlm treats them as invalid bytes, because
# the pre-tokenizer regex must only ever see valid UTF-8.)
BYTE_CASES = [b"ok \xff\xfe bad \xe2\x82 trunc caf\xc3\xa9 end", b"\x80lead", b"tail\xf0\x9f"]


def tokenizer_extras(llm, corpus):
    """llama.cpp's token ids for a whole corpus (as a count and the SHA-256 of the int32 ids) and for
    byte strings that are not valid UTF-8."""
    ids = llm.tokenize(pathlib.Path(corpus).read_bytes(), add_bos=False, special=False)
    return {"corpus_tokens": {"file": str(pathlib.Path(corpus).relative_to(ROOT)), "count": len(ids),
                              "sha256": hashlib.sha256(np.array(ids, dtype="<i4").tobytes()).hexdigest()},
            "byte_cases": [{"hex": b.hex(), "ids": llm.tokenize(b, add_bos=False, special=False)}
                           for b in BYTE_CASES]}


def greedy_run(llm, prompt, n):
    """llama.cpp's greedy continuation of prompt, with the gap between its two best logits at each step."""
    llm.reset()
    toks = llm.tokenize(prompt.encode(), add_bos=True, special=False)
    llm.eval(toks)
    gen, gaps = [], []
    for _ in range(n):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top2 = np.sort(logits)[-2:]
        nxt = int(np.argmax(logits))
        gen.append(nxt)
        gaps.append(float(top2[1] - top2[0]))
        llm.eval([nxt])
    return {"prompt": prompt, "prompt_tokens": toks, "tokens": gen, "gaps": gaps}


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


TINY_TEXTS = [
    "the king and my love",
    " What is the lord Hamlet? I love you, and not that.",
    "Tabs\tand\nnewlines\n\n and    runs   of spaces",
    "def f(x):\n    return 12 * x\n",
    "Ünïcödé café, 日本語, Русский, emoji 😀🎉",
    "<|im_start|>user\nhello<|im_end|>",
    "<s>literal control text</s>",
    "",
]


CHAT = [("system", "You are terse."), ("user", "Hi there"), ("assistant", "Hello."), ("user", "Name a color.")]
# leanlm's chat format -> the name of llama.cpp's built-in template it must reproduce.
CHAT_FORMATS = {"gemma": "gemma", "llama3": "llama3", "chatml": "chatml", "llama2": "llama2-sys"}


def make_chat_reference(out_file):
    """llama.cpp's rendering of one conversation in each chat format leanlm implements."""
    import ctypes
    import llama_cpp
    arr = (llama_cpp.llama_chat_message * len(CHAT))(
        *[llama_cpp.llama_chat_message(r.encode(), c.encode()) for r, c in CHAT])
    ref = {"messages": [{"role": r, "content": c} for r, c in CHAT], "formats": {}}
    for ours, theirs in CHAT_FORMATS.items():
        buf = ctypes.create_string_buffer(1 << 14)
        n = llama_cpp.llama_chat_apply_template(theirs.encode(), arr, len(CHAT), True, buf, len(buf))
        ref["formats"][ours] = {"llama_cpp_template": theirs, "text": buf.raw[:n].decode()}
    pathlib.Path(out_file).write_text(json.dumps(ref, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out_file}", file=sys.stderr)


def make_tiny_reference(a):
    """Reference outputs for a tiny fixture model: tokenizer cases, logits of a fixed token sequence
    (every position, full vocabulary) and greedy continuations."""
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    llm = Llama(a.model, n_ctx=256, n_batch=256, n_ubatch=256, n_threads=a.threads, logits_all=True, verbose=False)
    n_vocab = llm.n_vocab()
    ref = {"model_file": pathlib.Path(a.model).name, "model_sha256": sha256(a.model), "n_vocab": n_vocab}
    ref["tokenizer"] = [{"text": t, "ids": llm.tokenize(t.encode(), add_bos=True, special=True)} for t in TINY_TEXTS]
    rng = np.random.default_rng(7)
    seq = [int(x) for x in rng.integers(0, n_vocab, size=96)]
    if llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true":
        seq[0] = llm.token_bos()
    llm.reset()
    llm.eval(seq)
    ref["logit_tokens"] = seq
    np.array(llm.scores[:len(seq)], dtype=np.float32).tofile(out / "logits.bin")
    ref["greedy"] = [greedy_run(llm, p, 32) for p in TINY_TEXTS[:2]]
    (out / "reference.json").write_text(json.dumps(ref, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--text", default=str(ROOT / "data" / "hamlet.txt"))
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--kl-chunks", type=int, default=2)
    ap.add_argument("--ppl-chunks", type=int, default=8)
    ap.add_argument("--topk", type=int, default=256)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="fixture model: tokenizer cases, logits, greedy")
    ap.add_argument("--chat", action="store_true", help="only the chat formats (to --out, a .json file)")
    ap.add_argument("--corpus", default=str(ROOT / "data" / "shakespeare.txt"),
                    help="text whose whole tokenization is checked (count and hash of the ids)")
    ap.add_argument("--tokenizer-extras-only", action="store_true",
                    help="only add the corpus and byte-string tokenizations to an existing reference.json")
    a = ap.parse_args()
    if a.chat:
        return make_chat_reference(a.out)
    if a.tiny:
        return make_tiny_reference(a)
    if a.tokenizer_extras_only:
        path = pathlib.Path(a.out) / "reference.json"
        ref = json.loads(path.read_text(encoding="utf-8"))
        ref.update(tokenizer_extras(Llama(a.model, n_ctx=64, vocab_only=True, verbose=False), a.corpus))
        path.write_text(json.dumps(ref, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"updated {path}", file=sys.stderr)
        return

    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    llm = Llama(a.model, n_ctx=a.n_ctx, n_batch=a.n_ctx, n_ubatch=a.n_ctx, n_threads=a.threads,
                logits_all=True, verbose=False)
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "true") == "true"
    bos = llm.token_bos()

    ref = {"model_file": pathlib.Path(a.model).name, "model_sha256": sha256(a.model),
           "text_file": str(pathlib.Path(a.text).relative_to(ROOT)), "n_ctx": a.n_ctx, "topk": a.topk}

    ref["tokenizer"] = [{"text": t, "ids": llm.tokenize(t.encode(), add_bos=True, special=True)}
                        for t in TOKENIZER_CASES]
    ref.update(tokenizer_extras(llm, a.corpus))

    text = pathlib.Path(a.text).read_text(encoding="utf-8")
    tokens = llm.tokenize(text.encode(), add_bos=True, special=False)
    n_chunks = max(a.kl_chunks, a.ppl_chunks)
    if len(tokens) < n_chunks * a.n_ctx:
        sys.exit("text too short")

    # Perplexity exactly as llama-perplexity computes it, and the top-k tables of the KL chunks.
    nll, nll2, count = 0.0, 0.0, 0
    first = a.n_ctx // 2
    chunks, ids_all, lp_all = [], [], []
    for c in range(n_chunks):
        chunk = tokens[c * a.n_ctx:(c + 1) * a.n_ctx]
        if add_bos:
            chunk[0] = bos
        llm.reset()
        llm.eval(chunk)
        lp = log_softmax(np.array(llm.scores[:a.n_ctx], dtype=np.float32))
        if c < a.ppl_chunks:
            for j in range(first, a.n_ctx - 1):
                v = lp[j, chunk[j + 1]]
                nll -= v
                nll2 += v * v
                count += 1
        if c < a.kl_chunks:
            chunks.append(chunk)
            top = np.argsort(-lp, axis=1)[:, :a.topk]
            ids_all.append(top.astype(np.int32))
            lp_all.append(np.take_along_axis(lp, top, axis=1).astype(np.float32))
        print(f"chunk {c + 1}/{n_chunks}", file=sys.stderr)
    mean = nll / count
    ppl = math.exp(mean)
    err = ppl * math.sqrt(max(0.0, nll2 / count - mean * mean) / (count - 1))
    ref["kl_chunks"] = chunks
    ref["perplexity"] = {"n_ctx": a.n_ctx, "chunks": a.ppl_chunks, "ppl": ppl, "ppl_err": err, "scored": count}
    with open(out / "topk.bin", "wb") as f:
        np.concatenate(ids_all).tofile(f)
        np.concatenate(lp_all).tofile(f)

    # Greedy continuations, with the gap between the best two logits at every step.
    greedy = [greedy_run(llm, p, a.gen) for p in GREEDY_PROMPTS]
    ref["greedy"] = greedy

    # llama.cpp against itself: the same chunks fed one token at a time (its decode path) instead of
    # as one batch. Floating-point order differs between the two, and this model amplifies such
    # differences; the agreement reached here is the floor any other engine can be held to.
    solo = Llama(a.model, n_ctx=a.n_ctx, n_batch=1, n_ubatch=1, n_threads=a.threads, logits_all=True, verbose=False)
    kl_sum, agree, rows = 0.0, 0, 0
    for c, chunk in enumerate(chunks):
        solo.reset()
        solo.eval(chunk)
        lq = log_softmax(np.array(solo.scores[:a.n_ctx], dtype=np.float32))
        for j in range(a.n_ctx):
            ids, lp = ids_all[c][j], lp_all[c][j].astype(np.float64)
            p = np.exp(lp)
            kl = float((p * (lp - lq[j, ids])).sum())
            p_tail = max(0.0, 1.0 - p.sum())
            q_tail = max(1e-12, 1.0 - np.exp(lq[j, ids]).sum())
            if p_tail > 1e-12:
                kl += p_tail * math.log(p_tail / q_tail)
            kl_sum += kl
            agree += int(np.argmax(lq[j]) == ids[0])
            rows += 1
    solo_greedy = []
    for g in greedy:
        solo.reset()
        solo.eval(g["prompt_tokens"])
        same = 0
        for want in g["tokens"]:
            nxt = int(np.argmax(np.array(solo.scores[solo.n_tokens - 1], dtype=np.float32)))
            if nxt != want:
                break
            same += 1
            solo.eval([nxt])
        solo_greedy.append(same)
    ref["llama_cpp_self"] = {"what": "llama.cpp fed one token at a time vs. one batch", "positions": rows,
                             "kl": kl_sum / rows, "top1": agree / rows, "greedy_identical_tokens": solo_greedy}
    print(f"llama.cpp vs itself: KL {kl_sum / rows:.5f} top-1 {agree / rows:.4f} greedy {solo_greedy}", file=sys.stderr)

    (out / "reference.json").write_text(json.dumps(ref, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}: ppl {ppl:.4f} +/- {err:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
