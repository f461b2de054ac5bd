#!/usr/bin/env python3
"""Build the routing ground-truth query set (data/routing/queries.jsonl) from public
datasets' training or dev splits, never their test splits:

- math:      GSM8K `train.jsonl` (openai/grade-school-math), numeric final answers
- knowledge: MMLU `data/val/*.csv` (hendrycks/test, the validation split), four options
- code:      MBPP tasks 601-974 (the training split of google-research's `mbpp.jsonl`),
             graded by running its asserts
- everyday:  the Self-Instruct seed tasks (tatsu-lab/stanford_alpaca `seed_tasks.jsonl`),
             human-written everyday instructions, plus greetings and thanks written here,
             graded by rule checks (see grade.py)
- tools:     Seal-Tools' dev split (fairyshine/Seal-Tools, Apache-2.0): its single-call
             ("easy") tasks, each offered the five APIs the dataset lists with it as
             OpenAI `tools`, graded on the call against the dataset's own (`Seal-Tools_Dataset/`
             folder: `dev.jsonl` and `dataset_for_finetune/dev.json`)

Each source is read from a local copy (the files above, downloaded from their public
repositories). Sampling is seeded, so the same inputs give the same set; every row gets a
split (`train` or `heldout`, ~25 %) from a hash of its id, so the held-out split never
changes when rows are added.

    python3 scripts/routing/build_queries.py --gsm8k train.jsonl --mmlu-val DIR \
        --mbpp mbpp.jsonl --seed-tasks seed_tasks.jsonl --out data/routing/queries.jsonl

`--extend` keeps the rows already in --out and appends new ones from the sources given
(none already there), each source sampled with its own seed, so labels already measured
stay valid:

    python3 scripts/routing/build_queries.py --extend --extend-seed 1 --gsm8k train.jsonl \
        --math 150 --seed-tasks seed_tasks.jsonl --everyday 75
    python3 scripts/routing/build_queries.py --extend --extend-seed 3 \
        --seal-tools Seal-Tools/Seal-Tools_Dataset --tools 120
"""
import argparse
import ast
import csv
import hashlib
import json
import random
import re
from pathlib import Path

GREETINGS = [
    "hi", "hello!", "hey there", "good morning", "good evening!", "hi, how are you?",
    "hello, who are you?", "hey, what's up?", "yo", "good afternoon :)", "howdy",
    "hi there, nice to meet you", "hello again", "hey! how's your day going?",
    "greetings", "morning!", "hiya", "hello, can you hear me?", "hey, are you there?",
    "good night!",
]
THANKS = [
    "thanks!", "thank you so much", "thanks, that helped", "ok thanks", "great, thank you!",
    "cheers", "thx", "perfect, thanks a lot", "awesome, thanks", "thank you, bye!",
    "that's all, thanks", "nice, thanks for the help", "thanks, have a good day",
    "much appreciated", "ok cool thanks", "thank you very much!", "got it, thanks",
    "brilliant, thank you", "thanks again", "ty",
]


# What each kind's message adds to the question, so answers can be graded; the message
# (question + suffix) is what the models are asked and what the router sees.
SUFFIX = {
    "math": "\n\nSolve the problem step by step, then give the final answer on a last line "
            "of the form 'Answer: <number>'.",
    "knowledge": "\n\nAnswer with the letter (A, B, C or D) of the correct option.",
    "code": "\n\nWrite the Python function in a ```python code block.",
    "everyday": "",
    "tools": "",
}

# Seal-Tools' parameter types as JSON Schema types.
SCHEMA_TYPE = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
               "list": "array", "dict": "object"}


def split_of(row_id: str) -> str:
    h = int(hashlib.sha256(row_id.encode()).hexdigest()[:8], 16)
    return "heldout" if h % 4 == 0 else "train"


def math_rows(path, n, rng, exclude=frozenset()):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    candidates = [i for i in range(len(rows)) if f"gsm8k-train-{i}" not in exclude]
    picked = rng.sample(candidates, min(n, len(candidates)))
    for i in sorted(picked):
        r = rows[i]
        answer = r["answer"].split("####")[-1].strip().replace(",", "")
        yield {
            "id": f"gsm8k-train-{i}",
            "kind": "math",
            "prompt": r["question"],
            "grader": {"type": "number", "answer": answer},
        }


def mmlu_rows(folder, n, rng):
    rows = []
    for f in sorted(Path(folder).glob("*_val.csv")):
        subject = f.name[: -len("_val.csv")]
        for i, rec in enumerate(csv.reader(open(f, newline=""))):
            if len(rec) == 6:
                rows.append((subject, i, rec))
    for subject, i, (q, a, b, c, d, answer) in sorted(
        rng.sample(rows, n), key=lambda r: (r[0], r[1])
    ):
        text = f"{q}\n\nA. {a}\nB. {b}\nC. {c}\nD. {d}"
        yield {
            "id": f"mmlu-val-{subject}-{i}",
            "kind": "knowledge",
            "prompt": text,
            "grader": {"type": "choice", "answer": answer.strip()},
        }


def mbpp_rows(path, n, rng):
    rows = []
    for line in open(path):
        if not line.strip():
            continue
        r = json.loads(line)
        if isinstance(r.get("task_id"), int) and 601 <= r["task_id"] <= 974:
            rows.append(r)
    for r in sorted(rng.sample(rows, n), key=lambda r: r["task_id"]):
        yield {
            "id": f"mbpp-train-{r['task_id']}",
            "kind": "code",
            "prompt": f"{r['text']} Your code should pass this test:\n{r['test_list'][0]}",
            "grader": {
                "type": "python_tests",
                "setup": r.get("test_setup_code", ""),
                "tests": r["test_list"],
            },
        }


def everyday_rows(seed_tasks, n_seed, rng, exclude=frozenset()):
    tasks = [json.loads(l) for l in open(seed_tasks) if l.strip()]
    tasks = [t for t in tasks if f"selfinstruct-seed-{t['id']}" not in exclude]
    for t in sorted(rng.sample(tasks, min(n_seed, len(tasks))), key=lambda t: t["id"]):
        inst = t["instances"][0]
        prompt = t["instruction"] + (f"\n\n{inst['input']}" if inst["input"].strip() else "")
        reference = inst["output"].strip()
        grader = {"type": "everyday", "max_words": 400}
        # A short reference (a label, a word, a number) is checked for; a long one only
        # bounds the rule checks.
        if len(reference.split()) <= 3 and t.get("is_classification"):
            grader["contains"] = reference
        yield {"id": f"selfinstruct-seed-{t['id']}", "kind": "everyday", "prompt": prompt,
               "grader": grader}
    if exclude:
        return  # extending: the greetings and thanks are in already
    for i, g in enumerate(GREETINGS):
        yield {"id": f"greeting-{i}", "kind": "everyday", "prompt": g,
               "grader": {"type": "everyday", "max_words": 120}}
    for i, g in enumerate(THANKS):
        yield {"id": f"thanks-{i}", "kind": "everyday", "prompt": g,
               "grader": {"type": "everyday", "max_words": 120}}


def openai_tool(api):
    """One Seal-Tools API description as an OpenAI function tool."""
    properties = {
        name: {"type": SCHEMA_TYPE.get(p.get("type"), "string"),
               "description": p.get("description", "")}
        for name, p in api["parameters"].items()
    }
    return {"type": "function", "function": {
        "name": api["api_name"],
        "description": api["api_description"],
        "parameters": {"type": "object", "properties": properties,
                       "required": list(api.get("required", []))},
    }}


def plain(value):
    """Text for comparing argument values: lower-cased, without spaces or punctuation."""
    return re.sub(r"[\W_]+", "", str(value)).casefold()


def stated(value, query):
    """Whether the task's text states this argument value (numbers by value)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return any(abs(float(n) - float(value)) < 1e-6
                   for n in re.findall(r"-?\d+(?:\.\d+)?", query.replace(",", "")))
    return bool(plain(value)) and plain(value) in plain(query)


def tools_rows(folder, n, rng, exclude=frozenset()):
    # dev.jsonl holds each task and its reference calls; dataset_for_finetune/dev.json the
    # APIs offered with it (the reference's among four others), as a Python literal inside
    # the instruction ("api_list = [...]\ntask_instruction = ...").
    folder = Path(folder)
    calls = {r["id"]: r for r in map(json.loads, open(folder / "dev.jsonl")) if r}
    offered = {}
    for r in json.load(open(folder / "dataset_for_finetune" / "dev.json")):
        text = r["conversations"][0]["value"]
        start = text.index("api_list = ") + len("api_list = ")
        offered[r["id"]] = ast.literal_eval(text[start:text.index("\ntask_instruction = ")])

    # The reference's arguments that the task states are graded; the others (generated
    # with the dataset, like an OCR language the task never names) cannot be known from it.
    # A task that states none of its reference's arguments ("Github repository") is left
    # out: nothing in it says which call is meant.
    def graded(i):
        call = calls[i]["calling"][0]
        return {k: v for k, v in call["parameters"].items()
                if stated(v, calls[i]["query"])}

    easy = [i for i, r in calls.items()
            if len(r["calling"]) == 1 and i in offered
            and f"sealtools-{i}" not in exclude
            and r["calling"][0]["api"] in {a["api_name"] for a in offered[i]}
            and (graded(i) or not r["calling"][0]["parameters"])]
    for i in sorted(rng.sample(easy, min(n, len(easy))), key=lambda i: int(i.split("-")[-1])):
        yield {
            "id": f"sealtools-{i}",
            "kind": "tools",
            "prompt": calls[i]["query"],
            "tools": [openai_tool(a) for a in offered[i]],
            "grader": {"type": "tool_call", "name": calls[i]["calling"][0]["api"],
                       "arguments": graded(i)},
        }


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gsm8k")
    p.add_argument("--mmlu-val", help="folder of MMLU's *_val.csv")
    p.add_argument("--mbpp")
    p.add_argument("--seed-tasks")
    p.add_argument("--seal-tools", help="Seal-Tools' Seal-Tools_Dataset folder")
    p.add_argument("--extend", action="store_true",
                   help="keep --out's rows and append new ones from the sources given")
    p.add_argument("--extend-seed", type=int, default=1,
                   help="with --extend: mixed into each source's seed")
    p.add_argument("--math", type=int, default=120)
    p.add_argument("--knowledge", type=int, default=200)
    p.add_argument("--code", type=int, default=40)
    p.add_argument("--everyday", type=int, default=100)
    p.add_argument("--tools", type=int, default=120)
    p.add_argument("--seed", type=int, default=20261204)
    p.add_argument("--out", default="data/routing/queries.jsonl")
    a = p.parse_args()
    if a.extend:
        old = [json.loads(l) for l in open(a.out)]
        have = frozenset(r["id"] for r in old)
        rng = lambda name: random.Random(f"{a.seed}:{a.extend_seed}:{name}")
        rows = []
        if a.gsm8k:
            rows += math_rows(a.gsm8k, a.math, rng("math"), have)
        if a.seed_tasks:
            rows += everyday_rows(a.seed_tasks, a.everyday, rng("everyday"), have)
        if a.seal_tools:
            rows += tools_rows(a.seal_tools, a.tools, rng("tools"), have)
        if a.mmlu_val or a.mbpp:
            p.error("--extend reads --gsm8k, --seed-tasks and --seal-tools only")
    else:
        if not (a.gsm8k and a.mmlu_val and a.mbpp and a.seed_tasks):
            p.error("--gsm8k, --mmlu-val, --mbpp and --seed-tasks are all needed")
        old = []
        rng = random.Random(a.seed)
        rows = [
            *math_rows(a.gsm8k, a.math, rng),
            *mmlu_rows(a.mmlu_val, a.knowledge, rng),
            *mbpp_rows(a.mbpp, a.code, rng),
            *everyday_rows(a.seed_tasks, a.everyday, rng),
            *(tools_rows(a.seal_tools, a.tools, rng) if a.seal_tools else []),
        ]
    with open(a.out, "w") as f:
        for r in old:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        for r in rows:
            r["split"] = split_of(r["id"])
            r["message"] = r["prompt"] + SUFFIX[r["kind"]]
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    kinds = {}
    for r in rows:
        kinds.setdefault((r["kind"], r["split"]), 0)
        kinds[(r["kind"], r["split"])] += 1
    print(f"{len(rows)} new rows ({len(old)} kept) -> {a.out}")
    for k in sorted(kinds):
        print(f"  {k[0]:<10} {k[1]:<8} {kinds[k]}")


if __name__ == "__main__":
    main()
