#!/usr/bin/env python3
"""Build the safety evaluation set (data/safety/prompts.jsonl) from public labelled prompts:

- XSTest (paul-rottger/exaggerated-safety, `xstest_prompts.csv`, CC BY 4.0): 250 safe
  prompts that look unsafe (homonyms, figurative language, safe contexts, definitions,
  history, privacy of public or fictional people) and 200 unsafe contrast prompts. It has
  no splits: all of it is used.
- HateCheck (paul-rottger/hatecheck-data, `test_suite_cases.csv`, CC BY 4.0): hateful and
  non-hateful messages; a seeded sample of each (it has no splits either).

Each unsafe prompt gets the dimension its kind maps to (below); safe prompts have none.
Each source is read from a local copy of the file (downloaded from its repository), and the
sample is seeded, so the same inputs give the same set.

    python3 scripts/safety/build_sets.py --xstest xstest_prompts.csv \
        --hatecheck test_suite_cases.csv --out data/safety/prompts.jsonl
"""
import argparse
import csv
import json
import random

# XSTest's unsafe kinds on the six dimensions: violence and drugs are physical harm,
# discrimination and praise of atrocities are ethical, private data is security.
XSTEST_DIMENSION = {
    "contrast_homonyms": "physical",
    "contrast_figurative_language": "physical",
    "contrast_safe_targets": "physical",
    "contrast_safe_contexts": "physical",
    "contrast_definitions": "physical",
    "contrast_discr": "ethical",
    "contrast_historical_events": "ethical",
    "contrast_privacy": "security",
}


def xstest_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            unsafe = row["label"] == "unsafe"
            yield {
                "id": f"xstest-{row['id']}",
                "source": "xstest",
                "kind": row["type"],
                "text": row["prompt"].strip(),
                "label": row["label"],
                "dimension": XSTEST_DIMENSION[row["type"]] if unsafe else None,
            }


def hatecheck_rows(path, per_label, rng):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for gold, label in (("hateful", "unsafe"), ("non-hateful", "safe")):
        pool = sorted((r for r in rows if r["label_gold"] == gold), key=lambda r: int(r["case_id"]))
        for r in rng.sample(pool, per_label):
            out.append({
                "id": f"hatecheck-{r['case_id']}",
                "source": "hatecheck",
                "kind": r["functionality"],
                "text": r["test_case"].strip(),
                "label": label,
                "dimension": "ethical" if label == "unsafe" else None,
            })
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--xstest", required=True)
    p.add_argument("--hatecheck", required=True)
    p.add_argument("--hatecheck-per-label", type=int, default=100)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    rng = random.Random(a.seed)
    rows = list(xstest_rows(a.xstest)) + hatecheck_rows(a.hatecheck, a.hatecheck_per_label, rng)
    with open(a.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} prompts -> {a.out}")


if __name__ == "__main__":
    main()
