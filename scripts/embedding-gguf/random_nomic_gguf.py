#!/usr/bin/env python3
"""A small nomic-bert GGUF of RANDOM WEIGHTS, for wick's test against llama.cpp.

    scripts/embedding-gguf/random_nomic_gguf.py --vocab-from all-MiniLM-L6-v2.F16.gguf \
        --out random-nomic-bert.gguf

No real nomic-embed-text weights can be had here (no PyPI wheel ships them), so this writes
the tensor layout and metadata that llama.cpp's converter writes for nomic-embed-text-v1.5
(architecture `nomic-bert`: no position embeddings but rotary ones with `rope.freq_base`
1000, a fused `attn_qkv` without bias, an `attn_output` without bias, post-norm LayerNorms,
a SwiGLU feed-forward `ffn_up`/`ffn_gate`/`ffn_down` without biases, mean pooling), at a
small size: width 128, 4 heads of 32, feed-forward 256, two layers. Layer 0's matrices are
F16 and layer 1's Q8_0, so both of wick's paths for matrices run; the token embeddings are
F16 and norms, biases and token-type embeddings F32.

The WordPiece vocabulary (and its special ids) is copied from the MiniLM GGUF that
scripts/embedding-gguf/minilm_gguf.py builds, so tokenization is real; only the numbers are
noise. The file says so: `general.name` and `wick.synthetic = true`. Seeded with numpy's
legacy RandomState, whose streams numpy keeps fixed, so every run writes the same bytes (the
fixture tests/fixtures/llamacpp-embeddings-random-nomic-bert.json records their sha256).
"""
from __future__ import annotations

import argparse

import numpy as np
import gguf

HIDDEN, HEADS, FFN, LAYERS, CONTEXT = 128, 4, 256, 2, 2048
ROPE_BASE = 1000.0
SEED = 21


def copy_vocab(w: gguf.GGUFWriter, source: str) -> int:
    r = gguf.GGUFReader(source)

    def value(key):
        return r.fields[key].contents()

    tokens = value("tokenizer.ggml.tokens")
    w.add_tokenizer_model(value("tokenizer.ggml.model"))
    w.add_tokenizer_pre(value("tokenizer.ggml.pre"))
    w.add_token_list(tokens)
    w.add_token_types(value("tokenizer.ggml.token_type"))
    w.add_token_type_count(value("tokenizer.ggml.token_type_count"))
    w.add_bos_token_id(value("tokenizer.ggml.bos_token_id"))
    w.add_eos_token_id(value("tokenizer.ggml.eos_token_id"))
    w.add_unk_token_id(value("tokenizer.ggml.unknown_token_id"))
    w.add_sep_token_id(value("tokenizer.ggml.seperator_token_id"))
    w.add_pad_token_id(value("tokenizer.ggml.padding_token_id"))
    w.add_mask_token_id(value("tokenizer.ggml.mask_token_id"))
    w.add_add_bos_token(value("tokenizer.ggml.add_bos_token"))
    w.add_add_eos_token(value("tokenizer.ggml.add_eos_token"))
    return len(tokens)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab-from", required=True, help="the MiniLM GGUF (minilm_gguf.py)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    rng = np.random.RandomState(SEED)
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.NOMIC_BERT]
    w = gguf.GGUFWriter(args.out, arch)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name("random nomic-bert (wick test fixture, RANDOM WEIGHTS)")
    w.add_bool("wick.synthetic", True)
    w.add_block_count(LAYERS)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.MEAN)
    w.add_rope_freq_base(ROPE_BASE)
    n_vocab = copy_vocab(w, args.vocab_from)

    def normal(shape, sd):
        return (rng.standard_normal(shape) * sd).astype(np.float32)

    def matrix(name, rows, cols, quantized, scale=1.0):
        m = normal((rows, cols), scale / np.sqrt(cols))
        if quantized:
            q = gguf.quants.quantize(m, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, m.astype(np.float16))

    def norm(prefix):
        w.add_tensor(f"{prefix}.weight", 1.0 + normal(HIDDEN, 0.1))
        w.add_tensor(f"{prefix}.bias", normal(HIDDEN, 0.02))

    w.add_tensor("token_embd.weight", normal((n_vocab, HIDDEN), 1.0).astype(np.float16))
    w.add_tensor("token_types.weight", normal((2, HIDDEN), 0.5))
    norm("token_embd_norm")
    for i in range(LAYERS):
        p, quantized = f"blk.{i}", i % 2 == 1
        # q, k and v stacked in one matrix, in that order. The q and k rows are larger, so
        # attention is peaked and where a token sits (the rotary) changes what it sees.
        qkv = np.concatenate([
            normal((2 * HIDDEN, HIDDEN), 1.5 / np.sqrt(HIDDEN)),
            normal((HIDDEN, HIDDEN), 1.0 / np.sqrt(HIDDEN)),
        ])
        if quantized:
            q = gguf.quants.quantize(qkv, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(f"{p}.attn_qkv.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(f"{p}.attn_qkv.weight", qkv.astype(np.float16))
        matrix(f"{p}.attn_output.weight", HIDDEN, HIDDEN, quantized)
        norm(f"{p}.attn_output_norm")
        matrix(f"{p}.ffn_up.weight", FFN, HIDDEN, quantized)
        matrix(f"{p}.ffn_gate.weight", FFN, HIDDEN, quantized)
        matrix(f"{p}.ffn_down.weight", HIDDEN, FFN, quantized)
        norm(f"{p}.layer_output_norm")

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
