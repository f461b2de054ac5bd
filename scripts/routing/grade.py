#!/usr/bin/env python3
"""Run every query of data/routing/queries.jsonl on one model served by wick, grade each
answer automatically, and append the results to data/routing/labels.jsonl (one row per
query and model: whether the answer was acceptable, its latency and token counts).

    cargo build --release
    python3 scripts/routing/grade.py --model smollm2-135m-instruct
    python3 scripts/routing/grade.py --model qwen2.5-coder-0.5b-instruct
    python3 scripts/routing/grade.py --model qwen2.5-coder-1.5b-instruct

The script starts `target/release/wick serve --model M` on a free port (or uses --url),
sends the queries greedily (temperature 0) with --concurrency requests at once, as a
server would see them, and grades:
- math: the number after the last "Answer:" (else the last number) equals GSM8K's;
- knowledge: the last option stated ("answer is C", "\\boxed{C}", a line opening "C.") equals MMLU's;
- code: the fenced Python code passes every MBPP assert (a subprocess, 10 s limit);
- everyday: rule checks: an answer that ended on its own, within the word limit, not
  looping, with no control-token text, and containing the reference label when the task
  has one;
- tools: the query goes with its `tools` (tool_choice auto); acceptable is exactly one
  call, to the reference's function, with arguments that parse, name only the function's
  parameters, include its required ones and every argument of the reference that the task
  states, each with the reference's value (numbers by value, text ignoring case, spaces
  and punctuation).
Queries go in a fixed shuffled order, so a partial run covers every kind alike; rows
already graded for the model are skipped, so an interrupted run resumes.

Each answer's text goes to data/routing/outputs.jsonl, so a grader fixed later re-grades
without running the models again (`--regrade`). `--kinds knowledge --redo` forgets the
model's labels of those kinds and answers them again; `--cut-off` asks again only the
answers that its max_tokens cut off, once MAX_TOKENS is raised (greedy answers that ended
on their own are the same under any larger limit).
"""
import argparse
import hashlib
import concurrent.futures as cf
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# The same text normalisation that chose which reference arguments a task states.
from build_queries import plain

# Room for the step-by-step answers the Qwen models give to math and to multiple-choice
# questions: at 320 and 256 tokens, 159 of 540 Qwen math answers and 110 of 400 knowledge
# answers were cut off before stating one, and graded as wrong. Everyday answers keep 256:
# not ending within it fails the task's length rule anyway.
MAX_TOKENS = {"math": 768, "knowledge": 640, "code": 768, "everyday": 256, "tools": 256}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, timeout=900):
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def numbers(text):
    return [n.replace(",", "") for n in re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)]


def same_number(a, b):
    try:
        return abs(float(a) - float(b)) < 1e-6
    except ValueError:
        return False


def grade_math(text, answer):
    # The last stated answer ("Answer: 12", "the answer is $12", "final answer is: 12"),
    # else the last number written.
    stated = re.findall(r"answer(?:\s+is)?\s*[:=]?\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", text,
                        re.I)
    found = [n.replace(",", "") for n in stated] or numbers(text)
    return bool(found) and same_number(found[-1], answer)


# Ways a reply states its choice: "the answer is B", "Answer: (C)", "**Answer: D**"; "the
# correct definition is: B." and "option C" (capital letters only: "it is a ..." is not a
# choice); LaTeX's "\boxed{C}".
STATED_CHOICE = [
    re.compile(r"answer(?:\s+is)?(?:\s*option)?\s*[:\-]?\s*\**\(?([ABCD])\b", re.I),
    re.compile(r"\b(?:is|option|choice)\s*:?\s*\**\(?([ABCD])(?:[.):*]|\s*$)", re.M),
    re.compile(r"\\boxed\{\s*(?:\\text\{)?\(?([ABCD])\b"),
]


def grade_choice(text, answer):
    # The last choice stated, else the one option letter that opens a line ("B. An
    # idealized ..."): a reply that lists several options that way states none.
    stated = [(m.start(), m.group(1).upper()) for p in STATED_CHOICE for m in p.finditer(text)]
    if stated:
        return max(stated)[1] == answer
    openers = set(re.findall(r"^\s*\**\(?([ABCD])(?:[.):*]|\s*$)", text, re.M))
    return openers == {answer}


def grade_code(text, grader):
    blocks = re.findall(r"```(?:python|py)?\s*\n(.*?)```", text, re.S)
    if not blocks:
        return False
    program = "\n".join([grader.get("setup", ""), blocks[0], *grader["tests"]])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.py"
        path.write_text(program)
        try:
            r = subprocess.run([sys.executable, str(path)], cwd=d, capture_output=True,
                               timeout=10)
            return r.returncode == 0
        except subprocess.TimeoutExpired:
            return False


def loops(text):
    words = text.lower().split()
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    return len(grams) >= 20 and len(set(grams)) / len(grams) < 0.5


def grade_everyday(text, finish, grader):
    t = text.strip()
    return (
        bool(t)
        and finish == "stop"
        and len(t.split()) <= grader["max_words"]
        and not loops(t)
        and "<|" not in t
        and ("contains" not in grader or grader["contains"].lower() in t.lower())
    )


def same_value(got, want):
    """A call's argument against the reference's: numbers by value (5 == "5" == 5.0),
    booleans as such, text ignoring case, spaces and punctuation, lists item by item."""
    if isinstance(want, bool) or isinstance(got, bool):
        return str(got).lower() == str(want).lower()
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(
            same_value(g, w) for g, w in zip(got, want))
    if isinstance(want, (int, float)) or isinstance(got, (int, float)):
        try:
            return abs(float(got) - float(want)) < 1e-6
        except (TypeError, ValueError):
            return False
    return plain(got) == plain(want)


def grade_tool_call(text, grader, tools):
    # `text` is what ask() stored for a tools query: the reply's content and tool_calls.
    try:
        reply = json.loads(text)
    except ValueError:
        return False
    calls = reply.get("tool_calls") or []
    if len(calls) != 1 or calls[0].get("function", {}).get("name") != grader["name"]:
        return False
    try:
        args = json.loads(calls[0]["function"].get("arguments") or "{}")
    except ValueError:
        return False
    schema = next(t["function"]["parameters"] for t in tools
                  if t["function"]["name"] == grader["name"])
    return (
        isinstance(args, dict)
        and all(k in schema["properties"] for k in args)
        and all(k in args for k in schema.get("required", []))
        and all(k in args and same_value(args[k], v) for k, v in grader["arguments"].items())
    )


def grade(row, text, finish):
    g = row["grader"]
    kind = g["type"]
    if kind == "tool_call":
        return grade_tool_call(text, g, row["tools"])
    if kind == "number":
        return grade_math(text, g["answer"])
    if kind == "choice":
        return grade_choice(text, g["answer"])
    if kind == "python_tests":
        return grade_code(text, g)
    return grade_everyday(text, finish, g)


def ask(url, model, row, sampling=None):
    """One answer to `row`, graded: (label, text). Greedy unless `sampling` gives other
    sampling fields (scripts/routing/spread.py)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": row["message"]}],
        "max_tokens": MAX_TOKENS[row["kind"]],
        **(sampling or {"temperature": 0}),
    }
    if row.get("tools"):
        body["tools"] = row["tools"]
    start = time.monotonic()
    reply = post(f"{url}/v1/chat/completions", body)
    seconds = time.monotonic() - start
    choice = reply["choices"][0]
    text = choice["message"].get("content") or ""
    if row.get("tools"):
        # The calls are the answer: keep them with the text, for grading and --regrade.
        text = json.dumps({"content": text, "tool_calls": choice["message"].get("tool_calls")},
                          ensure_ascii=False)
    return {
        "id": row["id"],
        "model": model,
        "ok": grade(row, text, choice.get("finish_reason")),
        "seconds": round(seconds, 3),
        "prompt_tokens": reply["usage"]["prompt_tokens"],
        "completion_tokens": reply["usage"]["completion_tokens"],
        "finish": choice.get("finish_reason"),
    }, text


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip()]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def regrade(queries, labels_path, outputs_path):
    """Grade every stored answer again with today's graders; labels without a stored
    answer keep their verdict."""
    rows = {r["id"]: r for r in queries}
    texts = {(o["id"], o["model"]): o["text"] for o in read_jsonl(outputs_path)}
    labels = read_jsonl(labels_path)
    changed = 0
    for label in labels:
        text = texts.get((label["id"], label["model"]))
        if text is None or label["id"] not in rows:
            continue
        ok = grade(rows[label["id"]], text, label.get("finish"))
        changed += ok != label["ok"]
        label["ok"] = ok
    write_jsonl(labels_path, labels)
    print(f"re-graded {sum((l['id'], l['model']) in texts for l in labels)} labels, "
          f"{changed} changed")


def forget(path, model, ids):
    kept = [r for r in read_jsonl(path) if not (r["model"] == model and r["id"] in ids)]
    write_jsonl(path, kept)


def start_wick(model, concurrency):
    """`wick serve` for `model` on a free port, once it answers /health: (process, url)."""
    port = free_port()
    server = subprocess.Popen(
        ["target/release/wick", "serve", "--model", model, "--port", str(port),
         "--parallel", str(concurrency), "--ctx-size", "2048"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            time.sleep(1)
    return server, url


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="the catalog model to run (all but --regrade)")
    p.add_argument("--url", help="a running wick; default: start one")
    p.add_argument("--queries", default="data/routing/queries.jsonl")
    p.add_argument("--labels", default="data/routing/labels.jsonl")
    p.add_argument("--outputs", default="data/routing/outputs.jsonl",
                   help="each answer's text (jsonl)")
    p.add_argument("--kinds", nargs="+", help="only queries of these kinds")
    p.add_argument("--redo", action="store_true",
                   help="forget the model's labels of the selected queries and ask again")
    p.add_argument("--cut-off", action="store_true",
                   help="ask again only the selected queries whose answer from the model "
                        "was cut off by its max_tokens (after the limits are raised)")
    p.add_argument("--regrade", action="store_true",
                   help="re-grade the stored answers of every model; run no model")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--limit", type=int, help="only the first N queries not yet graded")
    a = p.parse_args()
    rows = [json.loads(l) for l in open(a.queries)]
    if a.regrade:
        regrade(rows, a.labels, a.outputs)
        return
    if not a.model:
        p.error("--model is required unless --regrade")
    kinds_of = {r["id"]: r["kind"] for r in rows}
    if a.kinds:
        rows = [r for r in rows if r["kind"] in a.kinds]
    if a.cut_off:
        cut = {(l["id"]) for l in read_jsonl(a.labels)
               if l["model"] == a.model and l.get("finish") == "length"
               and l.get("completion_tokens", 0) < MAX_TOKENS[kinds_of[l["id"]]]}
        rows = [r for r in rows if r["id"] in cut]
    if a.redo or a.cut_off:
        ids = {r["id"] for r in rows}
        forget(a.labels, a.model, ids)
        forget(a.outputs, a.model, ids)
    done = set()
    if os.path.exists(a.labels):
        for l in open(a.labels):
            r = json.loads(l)
            if r["model"] == a.model:
                done.add(r["id"])
    # A fixed shuffled order, so a partial run covers every kind alike.
    todo = sorted((r for r in rows if r["id"] not in done),
                  key=lambda r: hashlib.sha256(("order:" + r["id"]).encode()).hexdigest())
    todo = todo[: a.limit]
    print(f"{a.model}: {len(todo)} to grade ({len(done)} done)", flush=True)
    server, url = (None, a.url) if a.url else start_wick(a.model, a.concurrency)
    outputs = open(a.outputs, "a")
    passed = 0
    try:
        with open(a.labels, "a") as labels, cf.ThreadPoolExecutor(a.concurrency) as pool:
            futures = [pool.submit(ask, url, a.model, r) for r in todo]
            for i, f in enumerate(cf.as_completed(futures), 1):
                label, text = f.result()
                passed += label["ok"]
                labels.write(json.dumps(label) + "\n")
                labels.flush()
                outputs.write(json.dumps({"id": label["id"], "model": a.model,
                                          "text": text}, ensure_ascii=False) + "\n")
                outputs.flush()
                if i % 25 == 0:
                    print(f"  {i}/{len(todo)} graded, {passed} acceptable", flush=True)
    finally:
        outputs.close()
        if server:
            server.terminate()
            server.wait()
    print(f"{a.model}: {passed}/{len(todo)} acceptable")


if __name__ == "__main__":
    main()
