#!/usr/bin/env python3
"""Embedding throughput, wick beside llama.cpp's llama-server, on the same GGUF and inputs.

    scripts/embedding-gguf/bench.py MODEL.gguf [--wick target/release/wick]
        [--llama-server /tmp/llamacpp/build/bin/llama-server] [--threads 2]
        [--inputs 512] [--batch 32] [--clients 1]

Starts each server in turn (never both at once, so each has the CPU to itself) with the same
thread count, sends the same inputs (sentences of 8 to 40 words, fixed by a seed) to
/v1/embeddings in requests of --batch inputs from --clients concurrent clients, after one
warm-up request, and prints inputs/s and tokens/s (wick's count of prompt tokens) per server.
"""
import argparse
import concurrent.futures
import os
import random
import subprocess
import tempfile
import time

from server_io import free_port, post, wait

WORDS = ("the of and to in is was for on that with as by at from his her an they which one "
         "you had were their are this have be not but what all when there can more if out so "
         "said about time other into only could people new some like very after first water "
         "called been who oil its now find long down day did get come made may part over "
         "embedding vector model server search document query retrieval sentence meaning").split()


def inputs(n):
    rng = random.Random(21)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))).capitalize() + "."
            for _ in range(n)]


def measure(name, command, base, model, texts, batch, clients, env=None):
    log = tempfile.NamedTemporaryFile("w", delete=False, suffix=f"-{name}.log")
    server = subprocess.Popen(command, stdout=log, stderr=log, env=env)
    try:
        wait(base + "/health")
        post(base + "/v1/embeddings", {"model": model, "input": texts[:batch]})
        requests = [texts[i:i + batch] for i in range(0, len(texts), batch)]
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            replies = list(pool.map(
                lambda chunk: post(base + "/v1/embeddings", {"model": model, "input": chunk}),
                requests))
        elapsed = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait()
    assert sum(len(r["data"]) for r in replies) == len(texts)
    tokens = sum(r["usage"]["prompt_tokens"] for r in replies)
    return elapsed, tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--wick", default="target/release/wick")
    ap.add_argument("--llama-server", default="/tmp/llamacpp/build/bin/llama-server")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--inputs", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--clients", type=int, default=1)
    args = ap.parse_args()
    texts = inputs(args.inputs)
    model = os.path.abspath(args.model)
    rows = []
    port = free_port()
    rows.append(("llama.cpp llama-server", *measure(
        "llama", [args.llama_server, "-m", model, "--embedding", "-t", str(args.threads),
                  "-c", "8192", "-np", "16", "-b", "2048", "-ub", "2048",
                  "--port", str(port), "--host", "127.0.0.1"],
        f"http://127.0.0.1:{port}", "m", texts, args.batch, args.clients)))
    port = free_port()
    rows.append(("wick", *measure(
        "wick", [args.wick, "serve", "--model", model, "--threads", str(args.threads),
                 "--port", str(port)],
        f"http://127.0.0.1:{port}", "", texts, args.batch, args.clients)))
    print(f"{args.inputs} inputs, {args.batch} per request, {args.clients} client(s), "
          f"{args.threads} threads")
    print("| server | seconds | inputs/s | tokens/s |")
    print("|---|---|---|---|")
    for name, seconds, tokens in rows:
        print(f"| {name} | {seconds:.2f} | {args.inputs / seconds:.1f} | {tokens / seconds:.0f} |")


if __name__ == "__main__":
    main()
