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


def fit_logistic(X, y, l2=1.0, iters=30):
    """L2-regularised logistic regression by Newton's method (IRLS): minimises the summed
    log loss + l2/2·|w|² (the bias unpenalised). Newton needs no step size, so features of
    any scale converge alike; with fewer rows than features each step is solved in the
    rows' space (Woodbury), n×n instead of d×d."""
    n, d = X.shape
    w = np.zeros(d)
    b = 0.0
    for _ in range(iters):
        p = sigmoid(X @ w + b)
        s = np.clip(p * (1 - p), 1e-9, None)
        # Bias first (one-dimensional Newton step), then the weights.
        b -= (p - y).sum() / s.sum()
        p = sigmoid(X @ w + b)
        s = np.clip(p * (1 - p), 1e-9, None)
        g = X.T @ (p - y) + l2 * w
        if n < d:
            r = np.sqrt(s)
            K = l2 * np.eye(n) + (r[:, None] * X) @ (X.T * r[None, :])
            step = (g - X.T @ (r * np.linalg.solve(K, r * (X @ g)))) / l2
        else:
            H = (X.T * s[None, :]) @ X + l2 * np.eye(d)
            step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-7:
            break
    return w, b


def logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def log_loss(z, y):
    return float(np.mean(np.logaddexp(0, z) - y * z))


def fit_platt(scores, y):
    """Platt scaling: a, b of sigmoid(a·score + b), by Newton on the two parameters."""
    a, b = 1.0, 0.0
    A = np.stack([scores, np.ones_like(scores)], axis=1)
    for _ in range(50):
        p = sigmoid(a * scores + b)
        s = p * (1 - p) + 1e-9
        g = A.T @ (p - y)
        H = (A.T * s[None, :]) @ A + 1e-6 * np.eye(2)
        da, db = np.linalg.solve(H, g)
        a, b = a - da, b - db
        if max(abs(da), abs(db)) < 1e-9:
            break
    return float(a), float(b)


class Scaler:
    """Standardises the dense columns (the hashed ones are 0/1 and stay as they are), and
    folds the scaling back into raw-feature weights for the model file."""

    def __init__(self, X, dense):
        self.mu = np.zeros(X.shape[1])
        self.sd = np.ones(X.shape[1])
        self.mu[:dense] = X[:, :dense].mean(axis=0)
        sd = X[:, :dense].std(axis=0)
        self.sd[:dense] = np.where(sd > 1e-6, sd, 1.0)

    def __call__(self, X):
        return (X - self.mu) / self.sd

    def raw(self, w, b):
        return w / self.sd, b - float((w * self.mu / self.sd).sum())


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
    ap.add_argument("--l2", type=float, nargs="+", default=[10.0, 30.0, 100.0, 300.0, 1000.0],
                    help="L2 strengths to try; each tier keeps the one of least "
                         "out-of-fold log loss")
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

    # Out-of-fold scores on train (the L2 strength per tier, calibration and the default
    # operating point); the held-out split is touched only for the report.
    rng = np.random.default_rng(0)
    folds = rng.integers(0, 5, tr.sum())
    Xtr, Ytr = X[tr], Y[tr]
    dense = len(json.loads(subprocess.run(
        [a.wick, "routing-features", "--names"], capture_output=True, text=True,
        check=True).stdout)["dense"])

    def out_of_fold(j, l2):
        """Out-of-fold scores, and the mean of the five fold models in raw-feature weights.
        The mean is the shipped model: its scores are on the scale the Platt scaling was
        fitted on (a model refitted on all rows scores more confidently than the fold models
        did, and the calibration would not carry over)."""
        z = np.zeros(len(Ytr))
        ws, bs = [], []
        for k in range(5):
            fit_rows, val_rows = folds != k, folds == k
            scale = Scaler(Xtr[fit_rows], dense)
            w, b = fit_logistic(scale(Xtr[fit_rows]), Ytr[fit_rows, j], l2)
            z[val_rows] = scale(Xtr[val_rows]) @ w + b
            w, b = scale.raw(w, b)
            ws.append(w)
            bs.append(b)
        return z, (np.mean(ws, axis=0), float(np.mean(bs)))

    models = []
    oof = np.zeros_like(Ytr)
    Ptr = np.zeros_like(Ytr)
    Phe = np.zeros((he.sum(), len(measured)))
    for j, t in enumerate(measured):
        tried = {}
        for l2 in a.l2:
            z, model = out_of_fold(j, l2)
            pa, pb = fit_platt(z, Ytr[:, j])
            tried[l2] = (log_loss(pa * z + pb, Ytr[:, j]), z, model)
        l2 = min(tried, key=lambda k: tried[k][0])
        _, oof[:, j], (w, b) = tried[l2]
        print(f"tier_{t}: L2 {l2} (out-of-fold log loss "
              + ", ".join(f"{k}: {v[0]:.3f}" for k, v in tried.items()) + ")")
        pa, pb = fit_platt(oof[:, j], Ytr[:, j])
        Ptr[:, j] = sigmoid(pa * oof[:, j] + pb)
        Phe[:, j] = sigmoid(pa * (X[he] @ w + b) + pb)
        models.append({"tier": t, "weights": [round(float(v), 7) for v in w],
                       "bias": round(float(b), 7), "platt": [round(pa, 6), round(pb, 6)]})

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

    # The score ranked for "tier_1 fails where the top tier succeeds": the two calibrated
    # probabilities' difference, or the event's probability if the tiers failed
    # independently; whichever ranks better out of fold on train (the held-out split only
    # reports).
    scores = {
        "difference": lambda P: P[:, -1] - P[:, 0],
        "independent": lambda P: P[:, -1] * (1.0 - P[:, 0]),
    }
    fails_small_tr = ((Ytr[:, 0] == 0) & (Ytr[:, -1] == 1)).astype(float)
    oof_auc = {k: auc(f(Ptr), fails_small_tr) for k, f in scores.items()}
    score_name = max(oof_auc, key=oof_auc.get)
    print("out-of-fold AUC by score: "
          + ", ".join(f"{k} {v:.3f}" for k, v in oof_auc.items()))
    Yhe, She = Y[he], S[he]
    fails_small = ((Yhe[:, 0] == 0) & (Yhe[:, -1] == 1)).astype(float)
    auc_small = auc(scores[score_name](Phe), fails_small)
    # A reference, not a router: told each query's kind (math, knowledge, code, everyday)
    # and scoring it by that kind's rate of the event on train.
    kinds = np.array([queries[i].get("kind", "") for i in rows])
    rate = {k: fails_small_tr[kinds[tr] == k].mean() for k in set(kinds[tr])}
    auc_kind = auc(np.array([rate.get(k, 0.0) for k in kinds[he]]), fails_small)
    # The chosen tier's probability runs optimistic (a tier is chosen when its probability
    # reads high), so the reported confidence is Platt-scaled once more, on the out-of-fold
    # decisions at the default operating point.
    c_tr = route(Ptr, default)
    rows_tr = np.arange(len(c_tr))
    ca, cb = fit_platt(logit(Ptr[rows_tr, c_tr]), Ytr[rows_tr, c_tr])
    c = route(Phe, default)
    idx = np.arange(len(c))
    raw_conf, hit = Phe[idx, c], Yhe[idx, c]
    conf = sigmoid(ca * logit(raw_conf) + cb)
    report = {
        "heldout_rows": int(he.sum()),
        "auc_tier1_fails_top_succeeds": round(float(auc_small), 3),
        "auc_score": score_name,
        "auc_train_out_of_fold": round(float(oof_auc[score_name]), 3),
        "auc_told_the_kind": round(float(auc_kind), 3),
        "ece_confidence": round(float(ece(conf, hit)), 3),
        "ece_chosen_tier_probability": round(float(ece(raw_conf, hit)), 3),
        "confidence_platt": [round(ca, 6), round(cb, 6)],
        # What a perfectly calibrated router would score on this many rows: outcomes drawn
        # from its own probabilities (the sampling noise of ECE at this size).
        "ece_if_perfectly_calibrated": round(float(np.mean(
            [ece(conf, (rng.random(len(conf)) < conf).astype(float)) for _ in range(2000)])), 3),
        "ece_every_tier": round(float(ece(Phe.ravel(), Yhe.ravel())), 3),
        "ece_train_out_of_fold": round(float(ece(Ptr.ravel(), Ytr.ravel())), 3),
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
                   "confidence_platt": [round(ca, 6), round(cb, 6)],
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
