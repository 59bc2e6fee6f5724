#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz_gguf.cc: small but complete GGUF files (a few KiB, so that
libFuzzer's mutations reach every part of them) that parse, configure an architecture and build a
tokenizer, plus hostile files the parser must reject.

    python tests/fuzz_gguf_seeds.py OUT_DIR

Files named *.gguf must parse (tests/fuzz_gguf.sh checks it); *.bad must not.
"""
import pathlib
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

N_EMBD, N_FF, N_HEAD, N_HEAD_KV = 32, 64, 2, 1


def hyper_params(w):
    w.add_context_length(64)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(1)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)


def raw_blocks(rng, qtype, rows, cols):
    """Random blocks of a quantized type: [rows] rows of cols values."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    return rng.integers(0, 256, size=(rows, cols // block_elems * block_bytes), dtype=np.uint8)


def write(path, w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def spm_model(path):
    """llama with a SentencePiece-style vocabulary: control tokens, a few byte tokens, pieces."""
    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(str(path), "llama")
    hyper_params(w)
    tokens = ["<unk>", "<s>", "</s>", "<0x0A>", "<0x20>", "▁", "a", "b", "▁a", "ab"]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 5 + [-float(i) for i in range(5)])
    w.add_token_types([2, 3, 3, 6, 6, 1, 1, 1, 1, 1])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_tensor("token_embd.weight", rng.standard_normal((len(tokens), N_EMBD)).astype(np.float16))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", raw_blocks(rng, T.Q8_0, 2, N_EMBD), raw_dtype=T.Q8_0)
    write(path, w)


def bpe_model(path):
    """qwen2 with a byte-level BPE vocabulary and merges, and K-format tensors."""
    rng = np.random.default_rng(2)
    w = gguf.GGUFWriter(str(path), "qwen2")
    hyper_params(w)
    tokens = ["a", "b", "Ġ", "Ġa", "ab", "<|endoftext|>", "<|im_end|>"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([1, 1, 1, 1, 1, 3, 3])
    w.add_token_merges(["Ġ a", "a b"])
    w.add_eos_token_id(5)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.add_tensor("blk.0.ffn_down.weight", raw_blocks(rng, T.Q4_K, 1, 256), raw_dtype=T.Q4_K)
    w.add_tensor("blk.0.ffn_up.weight", raw_blocks(rng, T.Q6_K, 1, 256), raw_dtype=T.Q6_K)
    write(path, w)


def gemma3_model(path):
    """gemma3's extra keys (sliding window, soft-capping), with the BPE tokenizer's keys missing."""
    w = gguf.GGUFWriter(str(path), "gemma3")
    hyper_params(w)
    w.add_key_length(16)
    w.add_value_length(16)
    w.add_sliding_window(16)
    w.add_uint32("gemma3.attention.sliding_window_pattern", 6)
    w.add_float32("gemma3.final_logit_softcapping", 30.0)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b"])
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    write(path, w)


def every_type(path):
    """Every metadata type (nested arrays too) and one small tensor of each weight type."""
    rng = np.random.default_rng(3)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("u8", 200)
    w.add_int8("i8", -5)
    w.add_uint16("u16", 60000)
    w.add_int16("i16", -30000)
    w.add_uint32("u32", 4000000000)
    w.add_int32("i32", -2000000000)
    w.add_float32("f32", 1.5)
    w.add_bool("bool", True)
    w.add_uint64("u64", 1 << 40)
    w.add_int64("i64", -(1 << 40))
    w.add_float64("f64", -2.25)
    w.add_array("strings", ["a", "bc"])
    w.add_array("floats", [0.5, 1.0])
    w.add_array("nested", [[1, 2, 3], [4]])
    w.add_tensor("f32", np.arange(4, dtype=np.float32))
    w.add_tensor("f16", np.arange(4, dtype=np.float16))
    w.add_tensor("bf16", raw_blocks(rng, T.BF16, 2, 2), raw_dtype=T.BF16)
    for q in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q5_K, T.Q8_K):
        w.add_tensor(q.name.lower(), raw_blocks(rng, q, 1, gguf.GGML_QUANT_SIZES[q][0]), raw_dtype=q)
    write(path, w)


def overflowing_shape(path):
    """One F32 tensor of 2^40 x 2^40 x 2^40 x 2^6: 2^130 bytes, 0 if the size product wraps."""
    name = b"huge.weight"
    b = b"GGUF" + struct.pack("<IQQ", 3, 1, 0)
    b += struct.pack("<Q", len(name)) + name + struct.pack("<I4QIQ", 4, 1 << 40, 1 << 40, 1 << 40, 1 << 6, 0, 0)
    b += bytes(-len(b) % 32)
    path.write_bytes(b)


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, fn in (("spm.gguf", spm_model), ("bpe.gguf", bpe_model), ("gemma3.gguf", gemma3_model),
                     ("types.gguf", every_type), ("overflowing-shape.bad", overflowing_shape)):
        fn(out / name)
    # The smallest valid file: a header with no metadata and no tensors.
    (out / "empty.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))


if __name__ == "__main__":
    main()
