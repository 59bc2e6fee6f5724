#!/usr/bin/env python3
"""Writes tiny random-weight GGUF models for the tests: a `llama` model with a SentencePiece-style
vocabulary and a `qwen2` model with a byte-level BPE vocabulary. Deterministic (fixed seeds), so the
reference outputs in tests/golden/tiny-* (made by scripts/make_reference.py --tiny) stay valid.

    python scripts/make_fixtures.py --out build/fixtures

Between them the two models hold every weight type leanlm computes with: F32, F16, BF16, Q4_0,
Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K. gguf-py cannot quantize to the K formats, so those tensors are
random blocks with scales chosen to give weights of a few hundredths.
"""
import argparse
import pathlib

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

N_EMBD, N_FF, N_HEAD, N_HEAD_KV, N_LAYER = 256, 512, 4, 2, 2
HEAD_DIM = N_EMBD // N_HEAD

# Pieces for the SentencePiece-style vocabulary (higher score merges first); everything else falls
# back to bytes.
SPM_PIECES = ["▁", "e", "t", "a", "o", "i", "n", "s", "h", "r", "▁t", "he", "▁the", "▁a", "in", "er", "an",
              "▁and", "on", "re", "▁to", "▁of", "ou", "▁th", "en", "at", "▁s", "▁w", "or", "is", "ll",
              "▁my", "▁be", "▁I", "▁that", "▁you", "▁it", "▁not", "ing", "▁is", "▁in", "▁he", "ve", "st",
              "▁lord", "▁Ham", "let", "▁king", "▁love", "▁What", "▁?", ",", ".", "!"]
BPE_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "e r", "a n", "Ġ a", "o n", "r e", "Ġa nd", "o u", "Ġ s", "e n",
              "a t", "Ġ w", "o r", "i s", "l l", "Ġ o", "Ġo f", "Ġt o", "in g", "Ġ m", "Ġm y", "Ġ b", "Ġb e",
              "Ġ I", "Ġ h", "Ġh e", "e s", "Ġ l", "Ġl o", "v e", "Ġlo ve", "Ġ k", "Ġk in", "Ġkin g", "Ċ Ċ",
              "Ġ Ġ", "ĠĠ ĠĠ", "Ġ 1", "1 2", "Ġ d", "e f", "Ġd ef"]
BPE_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable characters (a fact of the format)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def f16_bytes(values):
    return np.asarray(values, dtype=np.float16).view(np.uint8).reshape(len(values), 2)


def random_k_blocks(rng, qtype, rows, cols):
    """Random K-format blocks: random code bytes, scale fields overwritten with small fp16 values."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    nb = rows * cols // block_elems
    raw = rng.integers(0, 256, size=(nb, block_bytes), dtype=np.uint8)
    scale = {T.Q2_K: (80, 1e-3, 82, 1e-3), T.Q3_K: (108, 3e-4, None, 0),
             T.Q4_K: (0, 6e-5, 2, 6e-5), T.Q5_K: (0, 3e-5, 2, 3e-5), T.Q6_K: (208, 1e-5, None, 0)}[qtype]
    d_off, d_val, m_off, m_val = scale
    raw[:, d_off:d_off + 2] = f16_bytes(rng.uniform(0.5, 1.5, nb) * d_val)
    if m_off is not None:
        raw[:, m_off:m_off + 2] = f16_bytes(rng.uniform(0.5, 1.5, nb) * m_val)
    return raw.reshape(rows, cols // block_elems * block_bytes)


def add_weight(w, rng, name, rows, cols, qtype, std=0.03):
    """A [rows][cols] weight (cols contiguous) of the given type."""
    if qtype in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
        w.add_tensor(name, random_k_blocks(rng, qtype, rows, cols), raw_dtype=qtype)
        return
    x = (rng.standard_normal((rows, cols)) * std).astype(np.float32)
    if qtype == T.F32:
        w.add_tensor(name, x)
    elif qtype == T.F16:
        w.add_tensor(name, x.astype(np.float16))
    else:
        w.add_tensor(name, gguf.quants.quantize(x, qtype), raw_dtype=qtype)


def add_norm(w, rng, name, n):
    w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))


def new_writer(path, arch):
    """A writer with the hyper-parameters both tiny models share."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"leanlm tiny {arch}")
    w.add_context_length(2048)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    return w


def add_layer(w, rng, i, lt, biases):
    add_norm(w, rng, f"blk.{i}.attn_norm.weight", N_EMBD)
    add_weight(w, rng, f"blk.{i}.attn_q.weight", N_EMBD, N_EMBD, lt["q"])
    add_weight(w, rng, f"blk.{i}.attn_k.weight", N_HEAD_KV * HEAD_DIM, N_EMBD, lt["k"])
    add_weight(w, rng, f"blk.{i}.attn_v.weight", N_HEAD_KV * HEAD_DIM, N_EMBD, lt["v"])
    if biases:
        for b, n in (("q", N_EMBD), ("k", N_HEAD_KV * HEAD_DIM), ("v", N_HEAD_KV * HEAD_DIM)):
            w.add_tensor(f"blk.{i}.attn_{b}.bias", (0.1 * rng.standard_normal(n)).astype(np.float32))
    add_weight(w, rng, f"blk.{i}.attn_output.weight", N_EMBD, N_EMBD, lt["o"])
    add_norm(w, rng, f"blk.{i}.ffn_norm.weight", N_EMBD)
    add_weight(w, rng, f"blk.{i}.ffn_gate.weight", N_FF, N_EMBD, lt["gate"])
    add_weight(w, rng, f"blk.{i}.ffn_up.weight", N_FF, N_EMBD, lt["up"])
    add_weight(w, rng, f"blk.{i}.ffn_down.weight", N_EMBD, N_FF, lt["down"])


def write_llama(path):
    rng = np.random.default_rng(1234)
    w = new_writer(path, "llama")
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    # SentencePiece-style vocabulary: control tokens, 256 byte tokens, pieces.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + SPM_PIECES
    types = [2, 3, 3] + [6] * 256 + [1] * len(SPM_PIECES)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(SPM_PIECES))]
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    vocab = len(tokens)
    add_weight(w, rng, "token_embd.weight", vocab, N_EMBD, T.F16, std=0.5)
    add_norm(w, rng, "output_norm.weight", N_EMBD)
    add_weight(w, rng, "output.weight", vocab, N_EMBD, T.Q6_K)
    layer_types = [
        dict(q=T.Q4_K, k=T.Q5_K, v=T.Q6_K, o=T.Q8_0, gate=T.Q4_0, up=T.Q5_1, down=T.Q3_K),
        dict(q=T.Q2_K, k=T.Q8_0, v=T.Q5_0, o=T.Q4_K, gate=T.Q6_K, up=T.Q4_1, down=T.Q5_K),
    ]
    for i, lt in enumerate(layer_types):
        add_layer(w, rng, i, lt, biases=False)
    finish(w)


def write_qwen2(path):
    rng = np.random.default_rng(5678)
    w = new_writer(path, "qwen2")
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    # Byte-level BPE: the 256 byte characters, one token per merge, then special tokens.
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)] + ["".join(m.split(" ")) for m in BPE_MERGES] + BPE_SPECIAL
    types = [1] * (256 + len(BPE_MERGES)) + [3] * len(BPE_SPECIAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(BPE_MERGES)
    eot = tokens.index("<|endoftext|>")
    w.add_bos_token_id(eot)
    w.add_eos_token_id(eot)
    w.add_pad_token_id(eot)
    w.add_add_bos_token(False)
    vocab = len(tokens)
    add_weight(w, rng, "token_embd.weight", vocab, N_EMBD, T.Q8_0, std=0.08)  # tied output
    add_norm(w, rng, "output_norm.weight", N_EMBD)
    layer_types = [
        dict(q=T.Q5_0, k=T.F32, v=T.Q4_1, o=T.BF16, gate=T.Q8_0, up=T.F16, down=T.Q4_0),
        dict(q=T.Q8_0, k=T.Q5_1, v=T.F16, o=T.Q5_0, gate=T.BF16, up=T.Q4_0, down=T.Q8_0),
    ]
    for i, lt in enumerate(layer_types):
        add_layer(w, rng, i, lt, biases=True)
    finish(w)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, fn in (("tiny-llama.gguf", write_llama), ("tiny-qwen2.gguf", write_qwen2)):
        tmp = out / (name + ".part")
        fn(tmp)
        tmp.replace(out / name)


if __name__ == "__main__":
    main()
