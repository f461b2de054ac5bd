#!/usr/bin/env python3
"""How much of a model's success on a query is the query, and how much the draw?

    python3 scripts/routing/spread.py --model qwen2.5-coder-1.5b-instruct --kind math \\
        --queries-per-kind 48 --samples 4

Asks `--samples` sampled answers (temperature 0.7, top_p 0.8: Qwen2.5's recommended
sampling; a fixed seed per sample) to the first `--queries-per-kind` queries of one kind
(a fixed shuffle of data/routing/queries.jsonl), grades them as scripts/routing/grade.py
does, appends them to data/routing/samples.jsonl (resumable: answers already there are not
asked again), and prints:
- how the queries split by the number of sampled answers that were right (a query with
  some right and some wrong is one where the outcome is the draw's);
- for each sample, how well the other samples' rate ranks its outcome (AUC): what a router
  that knew each query's difficulty as well as those samples show could reach;
- the same for a router that knew each query's exact success probability, from a
  beta-binomial fit to the counts (drawn outcomes, so no sample is used twice);
- how well the sampled rate ranks the greedy label of data/routing/labels.jsonl.

A router sees only the prompt, so no router can rank one answer's success above these
figures; scripts/routing/train.py's router is compared against them in the README.
"""
import argparse
import concurrent.futures as cf
import json
import os
import random
from math import comb, lgamma

import numpy as np

import grade as G
from train import auc


def ask(url, model, row, sample):
    label, _ = G.ask(url, model, row, {"temperature": 0.7, "top_p": 0.8, "seed": 1000 + sample})
    return {"id": row["id"], "model": model, "sample": sample, "ok": bool(label["ok"]),
            "completion_tokens": label["completion_tokens"]}


def beta_binomial(counts, k):
    """Maximum-likelihood Beta(a, b) of per-query success probabilities, from how many
    queries had 0..k of k samples right (a grid search: two parameters, a few hundred
    queries at most)."""
    def lbeta(x, y):
        return lgamma(x) + lgamma(y) - lgamma(x + y)

    def ll(a, b):
        return sum(c * (np.log(comb(k, s)) + lbeta(s + a, k - s + b) - lbeta(a, b))
                   for s, c in enumerate(counts))
    grid = np.linspace(0.1, 5, 99)
    return max(((a, b) for a in grid for b in grid), key=lambda ab: ll(*ab))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--kind", default="math")
    p.add_argument("--queries-per-kind", type=int, default=48)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--url", help="a running wick; default: start one")
    p.add_argument("--queries", default="data/routing/queries.jsonl")
    p.add_argument("--labels", default="data/routing/labels.jsonl")
    p.add_argument("--out", default="data/routing/samples.jsonl")
    p.add_argument("--concurrency", type=int, default=8)
    a = p.parse_args()

    rows = [json.loads(l) for l in open(a.queries)]
    rows = [r for r in rows if r["kind"] == a.kind]
    random.Random(7).shuffle(rows)
    rows = rows[:a.queries_per_kind]
    have = {}
    if os.path.exists(a.out):
        for r in map(json.loads, open(a.out)):
            if r["model"] == a.model:
                have[(r["id"], r["sample"])] = r["ok"]
    todo = [(r, s) for s in range(a.samples) for r in rows if (r["id"], s) not in have]
    print(f"{a.model}: {len(todo)} answers to sample ({len(have)} kept)", flush=True)
    if todo:
        server, url = (None, a.url) if a.url else G.start_wick(a.model, a.concurrency)
        try:
            with open(a.out, "a") as out, cf.ThreadPoolExecutor(a.concurrency) as pool:
                futures = [pool.submit(ask, url, a.model, r, s) for r, s in todo]
                for i, f in enumerate(cf.as_completed(futures), 1):
                    r = f.result()
                    have[(r["id"], r["sample"])] = r["ok"]
                    out.write(json.dumps(r) + "\n")
                    out.flush()
                    if i % 25 == 0:
                        print(f"  {i}/{len(todo)}", flush=True)
        finally:
            if server:
                server.terminate()
                server.wait()

    k = a.samples
    M = np.array([[have[(r["id"], s)] for s in range(k)] for r in rows], dtype=float)
    greedy = {l["id"]: l["ok"] for l in map(json.loads, open(a.labels))
              if l["model"] == a.model}
    g = np.array([greedy.get(r["id"], np.nan) for r in rows], dtype=float)
    counts = np.bincount(M.sum(axis=1).astype(int), minlength=k + 1)
    loo = [auc(np.delete(M, s, axis=1).mean(axis=1), M[:, s]) for s in range(k)]
    ba, bb = beta_binomial(counts, k)
    rng = np.random.default_rng(0)
    exact = []
    for _ in range(200):
        prob = rng.beta(ba, bb, 2000)
        exact.append(auc(prob, (rng.random(2000) < prob).astype(float)))
    known = ~np.isnan(g)
    report = {
        "model": a.model, "kind": a.kind, "queries": len(rows), "samples": k,
        "sampled_right": round(float(M.mean()), 3),
        "greedy_right": round(float(g[known].mean()), 3) if known.any() else None,
        "queries_by_samples_right": counts.tolist(),
        "mixed_share": round(float(counts[1:k].sum() / len(rows)), 3),
        "auc_other_samples_rate_for_one_sample": round(float(np.mean(loo)), 3),
        "beta_binomial": [round(float(ba), 2), round(float(bb), 2)],
        "auc_exact_probability_for_one_sample": round(float(np.mean(exact)), 3),
        "auc_sampled_rate_for_greedy_label": (round(float(auc(M[known].mean(axis=1),
                                                               g[known])), 3)
                                              if known.any() else None),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
