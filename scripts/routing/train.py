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
--plot), each figure with a 95 % bootstrap interval (a split of a few hundred rows moves
AUC and ECE by several points on its own).

Besides the held-out split, it cross-validates the whole procedure over every row (nested:
five outer folds, each scored by a router fitted from scratch on the other four), so the
figures also rest on all rows rather than one quarter of them (`cross_validated` in the
report; `--no-cross-validation` skips its five refits).

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


def route(P, quality, floor=None):
    """Index of the chosen tier per row: the smallest within 1 - quality of the top's p,
    and at least the row's `floor` (a column index per row: the tools floor for requests
    with tools, 0 for the others), as src/routing/learned.rs decides."""
    best = P[:, -1:]
    ok = P >= best - (1.0 - quality)
    if floor is not None:
        ok &= np.arange(P.shape[1])[None, :] >= floor[:, None]
    return ok.argmax(axis=1)


def tools_floor(Y):
    """The smallest tier (column index) whose tool calls graded right at least half as often
    as the top tier's on these rows (requests with tools); None without such rows. Which of
    the tiers at or above it answers is then the quality setting's choice, like for any
    request; the floor only keeps out tiers that cannot do the job."""
    if len(Y) == 0:
        return None
    acc = Y.mean(axis=0)
    return next(j for j in range(Y.shape[1]) if acc[j] >= 0.5 * acc[-1])


def row_floors(X, tools_col, floor):
    """Per row, the lowest column the server may route it to (route's `floor`)."""
    tools = X[:, tools_col] > 0.5
    return np.where(tools, floor if floor is not None else 0, 0)


SCORES = {
    # The score ranked for "tier_1 fails where the top tier succeeds": the two calibrated
    # probabilities' difference, or the event's probability if the tiers failed
    # independently; whichever ranks better out of fold on the rows fitted.
    "difference": lambda P: P[:, -1] - P[:, 0],
    "independent": lambda P: P[:, -1] * (1.0 - P[:, 0]),
}


def fit_router(X, Y, S, dense, l2s, tools_col, seed=0, log=print):
    """Everything the shipped router is fitted to, from these rows alone: per tier the L2
    strength of least out-of-fold log loss, the logistic weights (the mean of the five fold
    models, in raw-feature weights) and their Platt scaling; the default operating point and
    the AUC score chosen out of fold; and the confidence's second Platt scaling. Returns the
    fit and the out-of-fold probabilities."""
    rng = np.random.default_rng(seed)
    folds = rng.integers(0, 5, len(Y))

    def out_of_fold(j, l2):
        """Out-of-fold scores, and the mean of the five fold models in raw-feature weights.
        The mean is the shipped model: its scores are on the scale the Platt scaling was
        fitted on (a model refitted on all rows scores more confidently than the fold models
        did, and the calibration would not carry over)."""
        z = np.zeros(len(Y))
        ws, bs = [], []
        for k in range(5):
            fit_rows, val_rows = folds != k, folds == k
            scale = Scaler(X[fit_rows], dense)
            w, b = fit_logistic(scale(X[fit_rows]), Y[fit_rows, j], l2)
            z[val_rows] = scale(X[val_rows]) @ w + b
            w, b = scale.raw(w, b)
            ws.append(w)
            bs.append(b)
        return z, (np.mean(ws, axis=0), float(np.mean(bs)))

    tiers = []
    P = np.zeros_like(Y)
    for j in range(Y.shape[1]):
        tried = {}
        for l2 in l2s:
            z, model = out_of_fold(j, l2)
            pa, pb = fit_platt(z, Y[:, j])
            tried[l2] = (log_loss(pa * z + pb, Y[:, j]), z, model)
        l2 = min(tried, key=lambda k: tried[k][0])
        _, z, (w, b) = tried[l2]
        log(f"  tier {j + 1} of {Y.shape[1]}: L2 {l2} (out-of-fold log loss "
            + ", ".join(f"{k}: {v[0]:.3f}" for k, v in tried.items()) + ")")
        pa, pb = fit_platt(z, Y[:, j])
        P[:, j] = sigmoid(pa * z + pb)
        tiers.append({"w": w, "b": b, "platt": (pa, pb)})

    # Requests with tools start at the smallest tier that can make tool calls at all
    # (tools_floor), measured on these rows.
    floor = tools_floor(Y[X[:, tools_col] > 0.5])
    floors = row_floors(X, tools_col, floor)
    # The default operating point: the lowest out-of-fold mean latency whose accuracy is
    # within 2 points of always taking the top tier.
    default = 1.0
    top = Y[:, -1].mean()
    for q, acc, lat, *_ in sorted(curve(P, Y, S, floors), key=lambda p: p[2]):
        if acc >= top - 0.02:
            default = float(q)
            break
    fails_small = ((Y[:, 0] == 0) & (Y[:, -1] == 1)).astype(float)
    oof_auc = {k: auc(f(P), fails_small) for k, f in SCORES.items()}
    score_name = max(oof_auc, key=oof_auc.get)
    # The chosen tier's probability runs optimistic (a tier is chosen when its probability
    # reads high), so the reported confidence is Platt-scaled once more, on the out-of-fold
    # decisions at the default operating point.
    c = route(P, default, floors)
    idx = np.arange(len(c))
    conf_platt = fit_platt(logit(P[idx, c]), Y[idx, c])
    return {"tiers": tiers, "default": default, "score": score_name, "oof_auc": oof_auc,
            "confidence_platt": conf_platt, "tools_floor": floor}, P


def probabilities(fit, X):
    """Each tier's calibrated probability of an acceptable answer, as the server computes
    it (src/routing/learned.rs)."""
    return np.stack([sigmoid(t["platt"][0] * (X @ t["w"] + t["b"]) + t["platt"][1])
                     for t in fit["tiers"]], axis=1)


def confidence(fit, P, c):
    ca, cb = fit["confidence_platt"]
    return sigmoid(ca * logit(P[np.arange(len(c)), c]) + cb)


QUALITIES = np.round(np.linspace(0, 1, 41), 3)


def curve(P, Y, S, floor=None):
    pts = []
    for q in QUALITIES:
        c = route(P, q, floor)
        idx = np.arange(len(c))
        pts.append((q, Y[idx, c].mean(), S[idx, c].mean(),
                    [float((c == j).mean()) for j in range(Y.shape[1])]))
    return pts


def metrics(score, conf, c, Y, S):
    """The issue's three figures on a set of scored rows: AUC for "tier_1 fails where the
    top tier succeeds" (read both ways: the joint event over every row, and tier_1's
    failure among the rows the top tier answers), ECE of the reported confidence, and
    accuracy and mean latency at the chosen tiers beside always taking the top tier."""
    idx = np.arange(len(c))
    event = ((Y[:, 0] == 0) & (Y[:, -1] == 1)).astype(float)
    top_ok = Y[:, -1] == 1
    return {
        "auc": auc(score, event),
        # The same words read the other way: among the queries the top tier answers, how
        # well the score ranks those tier_1 fails. This one leaves out whether the top
        # tier itself will succeed, which is what bounds the joint figure above.
        "auc_given_top": auc(score[top_ok], 1.0 - Y[top_ok, 0]),
        "ece": ece(conf, Y[idx, c]),
        "accuracy": Y[idx, c].mean(),
        "top_accuracy": Y[:, -1].mean(),
        "latency_share": S[idx, c].mean() / S[:, -1].mean(),
    }


def bootstrap(score, conf, c, Y, S, n=1000, seed=0):
    """95 % intervals of metrics() by resampling the rows (the spread a set of this size
    gives on its own)."""
    rng = np.random.default_rng(seed)
    draws = {}
    for _ in range(n):
        r = rng.integers(0, len(c), len(c))
        for k, v in metrics(score[r], conf[r], c[r], Y[r], S[r]).items():
            draws.setdefault(k, []).append(v)
    out = {}
    for k, v in draws.items():
        v = np.array(v)
        v = v[~np.isnan(v)]
        out[k] = [round(float(np.percentile(v, 2.5)), 3), round(float(np.percentile(v, 97.5)), 3)]
    return out


def paired_gap(c, Y, n=1000, seed=0):
    """95 % interval of (router accuracy - always-top accuracy), resampled in pairs."""
    rng = np.random.default_rng(seed)
    idx = np.arange(len(c))
    gap = Y[idx, c] - Y[:, -1]
    draws = [gap[rng.integers(0, len(c), len(c))].mean() for _ in range(n)]
    return [round(float(np.percentile(draws, 2.5)), 3), round(float(np.percentile(draws, 97.5)), 3)]


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
    ap.add_argument("--no-cross-validation", action="store_true",
                    help="skip the nested cross-validation over every row (5 refits)")
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
    layout = json.loads(subprocess.run(
        [a.wick, "routing-features", "--names"], capture_output=True, text=True,
        check=True).stdout)
    dense = len(layout["dense"])
    tools_col = layout["dense"].index("has_tools")

    # The shipped router: fitted on the train split only; the held-out split is touched
    # only for the report.
    fit, Ptr = fit_router(X[tr], Y[tr], S[tr], dense, a.l2, tools_col)
    print("out-of-fold AUC by score: "
          + ", ".join(f"{k} {v:.3f}" for k, v in fit["oof_auc"].items()))
    Yhe, She = Y[he], S[he]
    Phe = probabilities(fit, X[he])
    floors_he = row_floors(X[he], tools_col, fit["tools_floor"])
    c = route(Phe, fit["default"], floors_he)
    idx = np.arange(len(c))
    conf = confidence(fit, Phe, c)
    score = SCORES[fit["score"]](Phe)
    m = metrics(score, conf, c, Yhe, She)
    # A reference, not a router: told each query's kind (math, knowledge, code, everyday)
    # and scoring it by that kind's rate of the event on train.
    kinds = np.array([queries[i].get("kind", "") for i in rows])
    fails_small_tr = ((Y[tr][:, 0] == 0) & (Y[tr][:, -1] == 1)).astype(float)
    rate = {k: fails_small_tr[kinds[tr] == k].mean() for k in set(kinds[tr])}
    fails_small = ((Yhe[:, 0] == 0) & (Yhe[:, -1] == 1)).astype(float)
    auc_kind = auc(np.array([rate.get(k, 0.0) for k in kinds[he]]), fails_small)
    rng = np.random.default_rng(0)
    ci = bootstrap(score, conf, c, Yhe, She)
    report = {
        "heldout_rows": int(he.sum()),
        "auc_tier1_fails_top_succeeds": round(float(m["auc"]), 3),
        "auc_95": ci["auc"],
        "auc_score": fit["score"],
        "auc_train_out_of_fold": round(float(fit["oof_auc"][fit["score"]]), 3),
        "auc_told_the_kind": round(float(auc_kind), 3),
        "auc_tier1_fails_given_top_succeeds": round(float(m["auc_given_top"]), 3),
        "auc_given_top_95": ci["auc_given_top"],
        "ece_confidence": round(float(m["ece"]), 3),
        "ece_95": ci["ece"],
        "ece_chosen_tier_probability": round(float(ece(Phe[idx, c], Yhe[idx, c])), 3),
        "confidence_platt": [round(v, 6) for v in fit["confidence_platt"]],
        # What a perfectly calibrated router would score on this many rows: outcomes drawn
        # from its own probabilities (the sampling noise of ECE at this size).
        "ece_if_perfectly_calibrated": round(float(np.mean(
            [ece(conf, (rng.random(len(conf)) < conf).astype(float)) for _ in range(2000)])), 3),
        "ece_every_tier": round(float(ece(Phe.ravel(), Yhe.ravel())), 3),
        "ece_train_out_of_fold": round(float(ece(Ptr.ravel(), Y[tr].ravel())), 3),
        "default_quality": fit["default"],
        "accuracy": round(float(m["accuracy"]), 3),
        "accuracy_minus_top_95": paired_gap(c, Yhe),
        "mean_seconds": round(float(She[idx, c].mean()), 2),
        "top_accuracy": round(float(Yhe[:, -1].mean()), 3),
        "top_mean_seconds": round(float(She[:, -1].mean()), 2),
        "latency_share_95": ci["latency_share"],
    }
    is_tools = X[:, tools_col] > 0.5
    if is_tools.any():
        # What the tools floor rests on: tool calls graded per tier, on each split.
        report["tools_floor"] = measured[fit["tools_floor"]]
        report["tools_accuracy_train"] = [round(float(v), 3) for v in Y[tr & is_tools].mean(axis=0)]
        report["tools_accuracy_heldout"] = [round(float(v), 3)
                                            for v in Y[he & is_tools].mean(axis=0)]
        report["tools_rows"] = [int((tr & is_tools).sum()), int((he & is_tools).sum())]
        # tier_1 never calls tools, so those rows are the event whenever the top tier's
        # call is right, and `has_tools` alone ranks them: the AUC on the other rows is
        # the one comparable with sets measured without tool calls.
        plain_he = ~is_tools[he]
        report["auc_without_tools_rows"] = round(float(auc(score[plain_he],
                                                           fails_small[plain_he])), 3)
    if not a.no_cross_validation:
        report["cross_validated"] = cross_validate(X, Y, S, dense, a.l2, tools_col)
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
    for q, acc, lat, share in curve(Phe, Yhe, She, floors_he)[::4]:
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

    models = [{"tier": t, "weights": [round(float(v), 7) for v in fit["tiers"][j]["w"]],
               "bias": round(float(fit["tiers"][j]["b"]), 7),
               "platt": [round(v, 6) for v in fit["tiers"][j]["platt"]]}
              for j, t in enumerate(measured)]
    with open(a.out, "w") as f:
        json.dump({"format": DENSE_FORMAT, "dense": layout["dense"],
                   "buckets": layout["buckets"], "default_quality": fit["default"],
                   "trained_on": {"rows": int(tr.sum()), "tiers": measured,
                                  "heldout": report},
                   "confidence_platt": [round(v, 6) for v in fit["confidence_platt"]],
                   # Requests outside what was measured are clamped into it by the server
                   # (src/routing/learned.rs) rather than extrapolated.
                   "dense_range": [[float(np.floor(lo * 1e6) / 1e6), float(np.ceil(hi * 1e6) / 1e6)]
                                   for lo, hi in
                                   zip(X[tr][:, :dense].min(axis=0),
                                       X[tr][:, :dense].max(axis=0))],
                   **({} if fit["tools_floor"] is None
                      else {"tools_floor": measured[fit["tools_floor"]]}),
                   "tiers": models}, f)
    print(f"wrote {a.out}")

    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        pts = curve(Phe, Yhe, She, floors_he)
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


def cross_validate(X, Y, S, dense, l2s, tools_col, k=5, seed=1):
    """Nested cross-validation over every row, train and held-out alike: k outer folds, each
    scored by a router fitted (L2 strengths, Platt scalings, default point, confidence
    scaling: all of fit_router) on the other folds only. Every row is then scored by a
    router that never saw it, so the figures rest on all rows instead of one split's
    quarter, at the price of describing this procedure rather than the one shipped file."""
    folds = np.random.default_rng(seed).integers(0, k, len(Y))
    score, conf = np.zeros(len(Y)), np.zeros(len(Y))
    c = np.zeros(len(Y), dtype=int)
    defaults = []
    for f in range(k):
        fit_rows, val_rows = folds != f, folds == f
        fit, _ = fit_router(X[fit_rows], Y[fit_rows], S[fit_rows], dense, l2s, tools_col,
                            log=lambda *_: None)
        P = probabilities(fit, X[val_rows])
        c[val_rows] = route(P, fit["default"],
                            row_floors(X[val_rows], tools_col, fit["tools_floor"]))
        conf[val_rows] = confidence(fit, P, c[val_rows])
        score[val_rows] = SCORES[fit["score"]](P)
        defaults.append(fit["default"])
    m = metrics(score, conf, c, Y, S)
    ci = bootstrap(score, conf, c, Y, S)
    rng = np.random.default_rng(0)
    plain = X[:, tools_col] < 0.5
    event = ((Y[:, 0] == 0) & (Y[:, -1] == 1)).astype(float)
    return {
        "auc_without_tools_rows": round(float(auc(score[plain], event[plain])), 3),
        "rows": int(len(Y)),
        "folds": k,
        "default_quality_per_fold": defaults,
        "auc_tier1_fails_top_succeeds": round(float(m["auc"]), 3),
        "auc_95": ci["auc"],
        "auc_tier1_fails_given_top_succeeds": round(float(m["auc_given_top"]), 3),
        "auc_given_top_95": ci["auc_given_top"],
        "ece_confidence": round(float(m["ece"]), 3),
        "ece_95": ci["ece"],
        "ece_if_perfectly_calibrated": round(float(np.mean(
            [ece(conf, (rng.random(len(conf)) < conf).astype(float)) for _ in range(500)])), 3),
        "accuracy": round(float(m["accuracy"]), 3),
        "top_accuracy": round(float(m["top_accuracy"]), 3),
        "accuracy_minus_top_95": paired_gap(c, Y),
        "latency_share": round(float(m["latency_share"]), 3),
        "latency_share_95": ci["latency_share"],
    }


if __name__ == "__main__":
    main()
