#!/usr/bin/env python3
"""Small GGUFs of RANDOM weights in the real tensor layout of architectures whose real
weights cannot be downloaded here, for wick's reference tests against llama.cpp.

    scripts/llamacpp-reference/random_gguf.py OUT_DIR

Writes random-qwen3.gguf (per-head q/k norms), random-llama31.gguf (llama with a
`rope_freqs.weight`, Llama 3.1's rope scaling), random-mistral.gguf (llama, one layer, sliding window 8), random-phi3.gguf (fused attn_qkv and
gate/up ffn_up, LongRoPE short and long factors with an original context of 32, so the long
ones serve in any context llama.cpp or wick opens, and an attn_factor) and random-gemma2.gguf (post-norms, GeGLU,
a sliding window of 8 on even layers, attention and final logit soft-capping), each two layers of width 128 with Q8_0
matrices (an untied output), f32 norms and a byte-level BPE vocabulary of 256 bytes plus a few merges and
<|endoftext|> (names, shapes and keys as llama.cpp's convert_hf_to_gguf.py writes them).
Seeded: the same files every run. Their logits mean nothing; only agreement does.
"""
import os
import sys

import numpy as np
import gguf

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, LAYERS, CONTEXT = 128, 4, 2, 32, 256, 2, 256
PHI3_ORIGINAL_CONTEXT = 32


def byte_tokens():
    # GPT-2's byte-to-unicode table: printable bytes stand for themselves.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


def vocab(writer):
    merges = [("Ġ", "t"), ("h", "e"), ("i", "n"), ("Ġt", "he")]
    tokens = byte_tokens() + ["".join(m) for m in merges] + ["<|endoftext|>"]
    types = [1] * (len(tokens) - 1) + [3]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([f"{a} {b}" for a, b in merges])
    eot = len(tokens) - 1
    writer.add_bos_token_id(eot)
    writer.add_eos_token_id(eot)
    writer.add_add_bos_token(False)
    return len(tokens)


def write(path, arch, seed, layers=LAYERS, window=None):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, arch)
    # (Not "phi3" in the name: llama.cpp keys a tokenizer quirk of real Phi-3 vocabularies on it.)
    w.add_name(f"random {arch.replace('phi3', 'phi 3')} (wick test fixture, RANDOM WEIGHTS)")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(layers)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0 if arch == "qwen3" else 500_000.0)
    if arch in ("llama", "phi3"):
        w.add_rope_dimension_count(HEAD_DIM)
    if arch == "phi3":
        w.add_rope_scaling_orig_ctx_len(PHI3_ORIGINAL_CONTEXT)
        w.add_rope_scaling_attn_factors(1.19)
        # As Phi-3's converter writes it; llama.cpp turns phi3's window off.
        w.add_sliding_window(CONTEXT)
    if window:
        w.add_sliding_window(window)
    if arch == "gemma2":
        # Small enough that both matter for these random weights and short texts.
        w.add_sliding_window(8)
        w.add_attn_logit_softcapping(5.0)
        w.add_final_logit_softcapping(10.0)
    n_vocab = vocab(w)

    def matrix(name, rows, cols, scale=1.0):
        m = rng.normal(0, scale / np.sqrt(cols), (rows, cols)).astype(np.float32)
        q = gguf.quants.quantize(m, gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def norm(name, n):
        w.add_tensor(name, (1.0 + rng.normal(0, 0.1, n)).astype(np.float32))

    # Embeddings of unit scale, and an output projection of its own whose logits spread over
    # a few units, so the top token depends on everything before it.
    # (Gemma ties its output to the embeddings, which it scales by sqrt(hidden) on the way in:
    # small ones, or the token's own embedding drowns what attention adds.)
    if arch == "gemma2":
        matrix("token_embd.weight", n_vocab, HIDDEN, scale=0.5)
    else:
        matrix("token_embd.weight", n_vocab, HIDDEN, scale=np.sqrt(HIDDEN))
        matrix("output.weight", n_vocab, HIDDEN, scale=3.0)
    norm("output_norm.weight", HIDDEN)
    if arch == "phi3":
        # LongRoPE: per-pair divisors, the long set slowing low frequencies far more.
        w.add_tensor("rope_factors_short.weight", np.linspace(1.0, 1.5, HEAD_DIM // 2).astype(np.float32))
        w.add_tensor("rope_factors_long.weight", np.linspace(1.0, 12.0, HEAD_DIM // 2).astype(np.float32))
    if arch == "llama":
        # Llama 3.1's shape: high frequencies untouched, low ones slowed up to 8 times.
        w.add_tensor("rope_freqs.weight", np.linspace(1.0, 8.0, HEAD_DIM // 2).astype(np.float32))
    for i in range(layers):
        p = f"blk.{i}"
        norm(f"{p}.attn_norm.weight", HIDDEN)
        # Gemma 2's q and k larger, so its scores reach past the soft cap and attention is
        # peaked enough for the window to matter.
        qk = 4.0 if arch == "gemma2" else 1.0
        if arch == "phi3":
            # q, k and v stacked in one matrix, in that order.
            matrix(f"{p}.attn_qkv.weight", (HEADS + 2 * KV_HEADS) * HEAD_DIM, HIDDEN)
        else:
            matrix(f"{p}.attn_q.weight", HEADS * HEAD_DIM, HIDDEN, scale=qk)
            matrix(f"{p}.attn_k.weight", KV_HEADS * HEAD_DIM, HIDDEN, scale=qk)
            matrix(f"{p}.attn_v.weight", KV_HEADS * HEAD_DIM, HIDDEN)
        if arch == "qwen3":
            norm(f"{p}.attn_q_norm.weight", HEAD_DIM)
            norm(f"{p}.attn_k_norm.weight", HEAD_DIM)
        matrix(f"{p}.attn_output.weight", HIDDEN, HEADS * HEAD_DIM)
        if arch == "gemma2":
            norm(f"{p}.post_attention_norm.weight", HIDDEN)
            norm(f"{p}.post_ffw_norm.weight", HIDDEN)
        norm(f"{p}.ffn_norm.weight", HIDDEN)
        if arch == "phi3":
            # gate then up, stacked.
            matrix(f"{p}.ffn_up.weight", 2 * FFN, HIDDEN)
        else:
            matrix(f"{p}.ffn_gate.weight", FFN, HIDDEN)
            matrix(f"{p}.ffn_up.weight", FFN, HIDDEN)
        matrix(f"{p}.ffn_down.weight", HIDDEN, FFN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    out = sys.argv[1]
    write(os.path.join(out, "random-qwen3.gguf"), "qwen3", 3)
    write(os.path.join(out, "random-llama31.gguf"), "llama", 31)
    write(os.path.join(out, "random-gemma2.gguf"), "gemma2", 2)
    write(os.path.join(out, "random-phi3.gguf"), "phi3", 33)
    # Mistral-style: a llama GGUF stating a sliding window (8); one layer, so llama.cpp can
    # give the windowed reference (reference.c window_logits).
    write(os.path.join(out, "random-mistral.gguf"), "llama", 7, layers=1, window=8)
