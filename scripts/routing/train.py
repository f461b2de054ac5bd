#!/usr/bin/env python3
"""Train the learned router (src/routing/learned.rs) on the measured ground truth and
report how it routes the held-out split.

    cargo build --release
    python3 -m venv .venv && .venv/bin/pip install -r scripts/routing/requirements.txt
    .venv/bin/python scripts/routing/train.py

Reads data/routing/queries.jsonl (the queries and their split), data/routing/labels.jsonl
(scripts/routing/grade.py: per query and catalog model, acceptable or not, latency) and the
feature vectors `wick routing-features` computes (the same code the server runs). Per
measured tier it fits an L2-regularised logistic regression of "acceptable", calibrates
it by Platt scaling on 5-fold out-of-fold scores, picks the default `--routing-quality` on
those out-of-fold scores (the lowest mean latency whose accuracy is within 2 points of
always taking the top tier), and writes data/routing/router.json. On the held-out split it
reports AUC for "tier_1 fails where the top tier succeeds", the expected calibration error
of the reported confidence, and the quality-vs-latency curve beside today's analyser,
random, always tier_1 and always the top tier (data/routing/report.md, and a plot with
--plot).

An operator retrains on their own traffic by writing queries and labels in the same two
formats (a label is {"id", "model", "ok", "seconds"}) and running this script with
--queries/--labels/--out, then `wick serve --router-model FILE`.
"""
import argparse
import json
import subprocess
import tomllib

import numpy as np

DENSE_FORMAT = "wick-router-1"


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def fit_logistic(X, y, l2=1.0, iters=3000, lr=0.5):
    """Full-batch gradient descent with momentum on the mean log loss + l2/n·|w|²."""
    n, d = X.shape
    w = np.zeros(d)
    b = 0.0
    vw = np.zeros(d)
    vb = 0.0
    for _ in range(iters):
        p = sigmoid(X @ w + b)
        g = p - y
        gw = X.T @ g / n + l2 * w / n
        gb = g.mean()
        vw = 0.9 * vw - lr * gw
        vb = 0.9 * vb - lr * gb
        w += vw
        b += vb
    return w, b


def fit_platt(scores, y):
    w, b = fit_logistic(scores[:, None], y, l2=1e-3, iters=2000, lr=0.1)
    return float(w[0]), float(b)


def auc(score, y):
    pos, neg = score[y == 1], score[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return greater / (len(pos) * len(neg))


def ece(p, y, bins=10):
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (p >= lo) & ((p < hi) | (hi == 1.0))
        if m.any():
            total += m.sum() / len(p) * abs(p[m].mean() - y[m].mean())
    return total


def route(P, quality):
    """Index of the chosen tier per row: the smallest within 1 - quality of the top's p."""
    best = P[:, -1:]
    ok = P >= best - (1.0 - quality)
    return ok.argmax(axis=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", default="data/routing/queries.jsonl")
    ap.add_argument("--labels", default="data/routing/labels.jsonl")
    ap.add_argument("--catalog", default="models.toml")
    ap.add_argument("--wick", default="target/release/wick")
    ap.add_argument("--out", default="data/routing/router.json")
    ap.add_argument("--report", default="data/routing/report.md")
    ap.add_argument("--plot", help="write the curve as a PNG here")
    ap.add_argument("--l2", type=float, default=30.0)
    ap.add_argument("--latency", choices=["modeled", "measured"], default="modeled",
                    help="modeled: each answer's tokens at the model's single-stream "
                         "speeds (--rates), which a busy grading machine does not skew; "
                         "measured: the wall time grade.py saw")
    ap.add_argument("--rates", default="data/routing/rates.json")
    a = ap.parse_args()

    tiers = {m["id"]: int(m["tier"].split("_")[1])
             for m in tomllib.load(open(a.catalog, "rb"))["model"]}
    queries = {r["id"]: r for r in map(json.loads, open(a.queries))}
    labels = {}
    for r in map(json.loads, open(a.labels)):
        if r["model"] in tiers:
            labels.setdefault(r["id"], {})[tiers[r["model"]]] = r
    measured = sorted({t for v in labels.values() for t in v})
    rows = [i for i in queries if i in labels and set(labels[i]) == set(measured)]
    feats = {}
    out = subprocess.run([a.wick, "routing-features", a.queries], capture_output=True,
                         check=True, text=True).stdout
    for line in out.splitlines():
        r = json.loads(line)
        feats[r["id"]] = r["x"]
    X = np.array([feats[i] for i in rows], dtype=np.float64)
    Y = np.array([[labels[i][t]["ok"] for t in measured] for i in rows], dtype=np.float64)
    if a.latency == "modeled":
        rates = json.load(open(a.rates))
        by_tier = {tiers[m]: r for m, r in rates["models"].items() if m in tiers}

        def seconds(label, t):
            r = by_tier[t]
            return label["prompt_tokens"] / r["prompt"] + label["completion_tokens"] / r["decode"]
    else:
        def seconds(label, t):
            return label["seconds"]
    S = np.array([[seconds(labels[i][t], t) for t in measured] for i in rows])
    held = np.array([queries[i]["split"] == "heldout" for i in rows])
    tr, he = ~held, held
    print(f"{len(rows)} queries graded on tiers {measured}: {tr.sum()} train, "
          f"{he.sum()} held out")

    # Out-of-fold scores on train (calibration and the default operating point).
    rng = np.random.default_rng(0)
    folds = rng.integers(0, 5, tr.sum())
    Xtr, Ytr = X[tr], Y[tr]
    oof = np.zeros_like(Ytr)
    for k in range(5):
        fit_rows, val_rows = folds != k, folds == k
        for j in range(len(measured)):
            w, b = fit_logistic(Xtr[fit_rows], Ytr[fit_rows, j], a.l2)
            oof[val_rows, j] = Xtr[val_rows] @ w + b
    models = []
    Ptr = np.zeros_like(Ytr)
    Phe = np.zeros((he.sum(), len(measured)))
    for j, t in enumerate(measured):
        pa, pb = fit_platt(oof[:, j], Ytr[:, j])
        Ptr[:, j] = sigmoid(pa * oof[:, j] + pb)
        w, b = fit_logistic(Xtr, Ytr[:, j], a.l2)
        Phe[:, j] = sigmoid(pa * (X[he] @ w + b) + pb)
        models.append({"tier": t, "weights": [round(float(v), 6) for v in w],
                       "bias": round(float(b), 6), "platt": [round(pa, 6), round(pb, 6)]})

    qualities = np.round(np.linspace(0, 1, 41), 3)

    def curve(P, Yq, Sq):
        pts = []
        for q in qualities:
            c = route(P, q)
            idx = np.arange(len(c))
            pts.append((q, Yq[idx, c].mean(), Sq[idx, c].mean(),
                        [float((c == j).mean()) for j in range(len(measured))],
                        P[idx, c], Yq[idx, c]))
        return pts

    top_tr = Ytr[:, -1].mean()
    default = 1.0
    for q, acc, lat, *_ in sorted(curve(Ptr, Ytr, S[tr]), key=lambda p: p[2]):
        if acc >= top_tr - 0.02:
            default = float(q)
            break

    Yhe, She = Y[he], S[he]
    fails_small = ((Yhe[:, 0] == 0) & (Yhe[:, -1] == 1)).astype(float)
    auc_small = auc(Phe[:, -1] - Phe[:, 0], fails_small)
    c = route(Phe, default)
    idx = np.arange(len(c))
    conf, hit = Phe[idx, c], Yhe[idx, c]
    report = {
        "heldout_rows": int(he.sum()),
        "auc_tier1_fails_top_succeeds": round(float(auc_small), 3),
        "ece_confidence": round(float(ece(conf, hit)), 3),
        "default_quality": default,
        "accuracy": round(float(hit.mean()), 3),
        "mean_seconds": round(float(She[idx, c].mean()), 2),
        "top_accuracy": round(float(Yhe[:, -1].mean()), 3),
        "top_mean_seconds": round(float(She[:, -1].mean()), 2),
    }
    # Baselines on the held-out split.
    an = X[he][:, 12:16].argmax(axis=1) + 1  # analyser one-hot tier (features.rs DENSE)
    an_idx = np.array([next((j for j, t in enumerate(measured) if t >= n), len(measured) - 1)
                       for n in an])
    baselines = {
        "analyser (today)": (Yhe[idx, an_idx].mean(), She[idx, an_idx].mean(),
                             [float((an_idx == j).mean()) for j in range(len(measured))]),
        "random": (Yhe.mean(), She.mean(), [1 / len(measured)] * len(measured)),
        "always tier_1": (Yhe[:, 0].mean(), She[:, 0].mean(),
                          [1.0] + [0.0] * (len(measured) - 1)),
        "always top": (Yhe[:, -1].mean(), She[:, -1].mean(),
                       [0.0] * (len(measured) - 1) + [1.0]),
    }
    lines = ["| router | quality | accuracy | mean latency (s) | share per tier "
             f"({', '.join(f'tier_{t}' for t in measured)}) |", "|---|---|---|---|---|"]
    for q, acc, lat, share, *_ in curve(Phe, Yhe, She)[::4]:
        lines.append(f"| learned | {q:.2f} | {acc:.3f} | {lat:.2f} | "
                     f"{', '.join(f'{s:.2f}' for s in share)} |")
    for name, (acc, lat, share) in baselines.items():
        lines.append(f"| {name} | | {acc:.3f} | {lat:.2f} | "
                     f"{', '.join(f'{s:.2f}' for s in share)} |")
    with open(a.report, "w") as f:
        f.write("# Learned router: held-out report (scripts/routing/train.py)\n\n")
        f.write("```json\n" + json.dumps(report, indent=2) + "\n```\n\n")
        f.write("\n".join(lines) + "\n")
    print(json.dumps(report, indent=2))
    print("\n".join(lines))

    dense_names = json.loads(subprocess.run(
        [a.wick, "routing-features", "--names"], capture_output=True, text=True,
        check=True).stdout)
    with open(a.out, "w") as f:
        json.dump({"format": DENSE_FORMAT, "dense": dense_names["dense"],
                   "buckets": dense_names["buckets"], "default_quality": default,
                   "trained_on": {"rows": int(tr.sum()), "tiers": measured,
                                  "heldout": report},
                   "tiers": models}, f)
    print(f"wrote {a.out}")

    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        pts = curve(Phe, Yhe, She)
        plt.figure(figsize=(6, 4))
        plt.plot([p[2] for p in pts], [p[1] for p in pts], "o-", ms=3, label="learned router")
        for name, (acc, lat, _) in baselines.items():
            plt.scatter([lat], [acc], label=name)
        plt.xlabel("mean latency per query (s)")
        plt.ylabel("share answered acceptably")
        plt.title("Held-out split: quality vs latency")
        plt.legend(fontsize=8)
        plt.tight_layout()
        plt.savefig(a.plot, dpi=110)
        print(f"wrote {a.plot}")


if __name__ == "__main__":
    main()
