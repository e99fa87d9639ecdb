"""Evaluation: the metrics of the three papers (numpy only), then route-level scoring.

Scores follow the ASVspoof convention: higher = more bona fide. Labels are the strings "real"
(bona fide) and "fake" (spoof); a hard prediction may also be None (a malformed completion),
which is never correct and never the positive class. Metrics by route:
  speech classifier (Wang, Ge, Yamagishi 2026; ASVspoof 2019/2021/5 evaluation packages):
      det_curve, compute_eer, min_dcf, act_dcf, cllr; wasserstein_drift for embedding drift
  face VLM (Jiang, Li et al. 2026, Tables 1-3, Fig. 6): frr_far_hter(_at), per_attack_error_rates
  HIR-SDD (Dvirniak et al. 2026, Sec. 4.3, Eq. 1): accuracy, balanced_accuracy, f1_score,
      jaccard, mean_jaccard, malformed_share
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

LABELS = ("real", "fake")


# ----------------------------------------------------------------------------------------------
# Metrics (numpy only)
# ----------------------------------------------------------------------------------------------

def _scores(x, name: str) -> np.ndarray:
    """A 1-D float array of scores; empty or NaN input is an error, never a silent number."""
    s = np.asarray(x, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D list of scores, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError(f"{name}: {int(np.isnan(s).sum())} NaN score(s)")
    return s


def det_curve(bona_scores, spoof_scores):
    """DET curve exactly as `compute_det_curve` of the ASVspoof 2019/2021/5 evaluation packages.

    The scores [bona, spoof] are sorted ascending with a *stable* sort, so on a tie the bona
    fide trials come first (this decides the EER when scores tie). Position k = 0..n rejects the
    k lowest trials:
        FRR_k = (#bona among the first k) / n_bona
        FAR_k = (n_spoof - #spoof among the first k) / n_spoof
    with threshold_0 = min(score) - 0.001 (reject nothing) and threshold_k = the k-th sorted score.
    Returns (frr, far, thresholds), each of shape (n_bona + n_spoof + 1,).
    """
    bona, spoof = _scores(bona_scores, "bona_scores"), _scores(spoof_scores, "spoof_scores")
    scores = np.concatenate([bona, spoof])
    is_bona = np.concatenate([np.ones(bona.size), np.zeros(spoof.size)])
    order = np.argsort(scores, kind="mergesort")           # stable: ties keep bona first
    bona_below = np.cumsum(is_bona[order])                 # (n,)
    spoof_below = np.arange(1, scores.size + 1) - bona_below
    frr = np.concatenate([[0.0], bona_below / bona.size])
    far = np.concatenate([[1.0], (spoof.size - spoof_below) / spoof.size])
    thresholds = np.concatenate([[scores[order[0]] - 0.001], scores[order]])
    return frr, far, thresholds


def compute_eer(bona_scores, spoof_scores) -> tuple[float, float]:
    """Equal error rate, as the ASVspoof 2019/2021/5 packages compute it (`compute_eer`).

    On the DET curve of `det_curve`: i = first argmin_k |FRR_k - FAR_k|,
        EER = (FRR_i + FAR_i) / 2,  threshold = thresholds_i;
    no interpolation between points. Example: bona [1,2,3,4,5], spoof [0,1.5,2.5] gives
    FRR 0.4, FAR 1/3, so EER = 0.3667 at threshold 2.0. Quirk kept from the packages: when all
    scores tie (a collapsed detector) the EER is 1.0, not 0.5.
    """
    frr, far, thresholds = det_curve(bona_scores, spoof_scores)
    i = np.argmin(np.abs(frr - far))
    return float((frr[i] + far[i]) / 2), float(thresholds[i])


def _check_costs(p_spoof: float, c_miss: float, c_fa: float) -> None:
    if not 0.0 < p_spoof < 1.0 or c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"need 0 < p_spoof < 1 and positive costs, "
                         f"got p_spoof={p_spoof}, c_miss={c_miss}, c_fa={c_fa}")


def min_dcf(bona_scores, spoof_scores, p_spoof=0.05, c_miss=1.0, c_fa=10.0) -> tuple[float, float]:
    """Minimum normalized DCF (ASVspoof 5 primary metric, Track 1), as `compute_mindcf` does it.

        DCF(t) = C_miss (1 - P_spoof) P_miss_bona(t) + C_fa P_spoof P_fa_spoof(t)
        minDCF = min_t DCF(t) / min(C_miss (1 - P_spoof), C_fa P_spoof)
    over the DET-curve points of `det_curve` (first minimum). Defaults are ASVspoof 5's
    (P_spoof 0.05, C_miss 1, C_fa 10), so minDCF = min_t 1.9 P_miss + P_fa. Returns (minDCF, t).
    """
    _check_costs(p_spoof, c_miss, c_fa)
    frr, far, thresholds = det_curve(bona_scores, spoof_scores)
    # The package writes the weights as p_target = 1 - P_spoof and 1 - p_target (which is not
    # bit-equal to P_spoof); same order here so the numbers match it to the last bit.
    p_target = 1 - p_spoof
    dcf = c_miss * frr * p_target + c_fa * far * (1 - p_target)    # (n + 1,)
    i = np.argmin(dcf)
    return float(dcf[i] / min(c_miss * p_target, c_fa * (1 - p_target))), float(thresholds[i])


def act_dcf(bona_scores, spoof_scores, p_spoof=0.05, c_miss=1.0, c_fa=10.0) -> tuple[float, float]:
    """Actual normalized DCF at the Bayes threshold (ASVspoof 5 package, `compute_actDCF`).

    Scores are read as log-likelihood ratios log p(s|bona)/p(s|spoof). With
    beta = C_miss (1 - P_spoof) / (C_fa P_spoof) (ASVspoof 5 evaluation plan, Eq. 3) the Bayes
    decision accepts when s >= t = -log(beta) (t = -log 1.9 = -0.642 for the defaults):
        P_miss = #(bona < t) / n_bona,  P_fa = #(spoof >= t) / n_spoof
        actDCF = [C_miss (1 - P_spoof) P_miss + C_fa P_spoof P_fa]
                 / min(C_fa P_spoof, C_miss (1 - P_spoof))
    Unlike minDCF this also charges for miscalibration. Returns (actDCF, t).
    """
    _check_costs(p_spoof, c_miss, c_fa)
    bona, spoof = _scores(bona_scores, "bona_scores"), _scores(spoof_scores, "spoof_scores")
    beta = c_miss * (1 - p_spoof) / (c_fa * p_spoof)
    t = -np.log(beta)
    p_miss = np.sum(bona < t) / bona.size
    p_fa = np.sum(spoof >= t) / spoof.size
    dcf = c_miss * (1 - p_spoof) * p_miss + c_fa * p_spoof * p_fa
    return float(dcf / min(c_fa * p_spoof, c_miss * (1 - p_spoof))), float(t)


def cllr(bona_scores, spoof_scores) -> float:
    """Log-likelihood-ratio cost in bits (ASVspoof 5 secondary metric, `calculate_CLLR`).

        Cllr = 1/2 [ mean_bona log2(1 + e^-s) + mean_spoof log2(1 + e^s) ]
    with s read as natural-log LLRs. 1 bit = an uninformative detector (all s = 0); 0 = perfect
    and confident. log(1 + e^x) is computed as logaddexp(0, x), which does not overflow.
    """
    bona, spoof = _scores(bona_scores, "bona_scores"), _scores(spoof_scores, "spoof_scores")
    nats = np.mean(np.logaddexp(0.0, -bona)) + np.mean(np.logaddexp(0.0, spoof))
    return float(0.5 * nats / np.log(2.0))


def _labels(pred: Sequence, true: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Object arrays of predictions and true labels after checking both against LABELS."""
    if len(pred) != len(true) or len(true) == 0:
        raise ValueError(f"need equal, non-zero numbers of predictions and labels, "
                         f"got {len(pred)} and {len(true)}")
    bad_true = sorted({repr(t) for t in true if t not in LABELS})
    bad_pred = sorted({repr(p) for p in pred if p is not None and p not in LABELS})
    if bad_true or bad_pred:
        raise ValueError(f"labels must be 'real'/'fake' (predictions may be None); "
                         f"bad labels {bad_true}, bad predictions {bad_pred}")
    return np.array(list(pred), dtype=object), np.array(list(true), dtype=object)


def accuracy(pred, true) -> float:
    """Accuracy = #(pred == true) / n; a None prediction counts as wrong (HIR-SDD, Sec. 4.3)."""
    p, t = _labels(pred, true)
    return float(np.mean(p == t))


def balanced_accuracy(pred, true) -> float:
    """Balanced accuracy = mean over the classes c present in `true` of recall_c (HIR-SDD).

        recall_c = #(pred == c and true == c) / #(true == c)
    A None prediction lowers the recall of its true class (as in sklearn's balanced_accuracy_score).
    """
    p, t = _labels(pred, true)
    return float(np.mean([np.mean(p[t == c] == c) for c in LABELS if np.any(t == c)]))


def f1_score(pred, true, positive="real") -> float:
    """F1 of the positive class, bona fide ("real") by default as in HIR-SDD (Sec. 4.3).

        F1 = 2 TP / (2 TP + FP + FN)   (= harmonic mean of precision and recall)
    A None prediction is never the positive class: on a positive sample it is a false negative,
    on a negative sample it costs nothing here (accuracy and balanced accuracy still count it).
    0.0 when there is no positive sample and no positive prediction (sklearn's zero_division=0).
    """
    if positive not in LABELS:
        raise ValueError(f"positive must be one of {LABELS}, got {positive!r}")
    p, t = _labels(pred, true)
    tp = np.sum((p == positive) & (t == positive))
    fp = np.sum((p == positive) & (t != positive))
    fn = np.sum((p != positive) & (t == positive))
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn > 0 else 0.0


class ErrorRates(NamedTuple):
    frr: float   # share of real faces not classified real (false rejections)
    far: float   # share of spoof faces not classified fake (false acceptances)
    hter: float  # (FRR + FAR) / 2


def frr_far_hter(pred, true) -> ErrorRates:
    """FRR, FAR and HTER from hard decisions (face paper, Jiang et al. 2026, Tables 1-3).

        FRR = #(true real, pred != real) / #real,  FAR = #(true fake, pred != fake) / #fake,
        HTER = (FRR + FAR) / 2
    The face paper reads the class from the <answer> tag, with no threshold. A None (malformed)
    prediction is an error on either side: a real face it rejects, a spoof it lets through.
    """
    p, t = _labels(pred, true)
    if not (np.any(t == "real") and np.any(t == "fake")):
        raise ValueError("FRR/FAR/HTER need at least one real and one fake sample")
    frr = float(np.mean(p[t == "real"] != "real"))
    far = float(np.mean(p[t == "fake"] != "fake"))
    return ErrorRates(frr, far, (frr + far) / 2)


def frr_far_hter_at(scores, true, threshold: float) -> ErrorRates:
    """FRR, FAR and HTER of scores at a threshold: score >= threshold -> "real", else "fake"."""
    s = _scores(scores, "scores")
    return frr_far_hter(np.where(s >= threshold, "real", "fake").tolist(), true)


def per_attack_error_rates(pred, true, attacks) -> dict[str, float]:
    """Error rate per attack type, real faces under the key "real" (face paper, Fig. 6).

        err_a = #(pred != true among samples of type a) / #(samples of type a)
    For a real sample the attack field is ignored (manifests often hold "" or "none" there);
    a fake sample must not carry the attack name "real". None predictions count as errors.
    Keys are sorted.
    """
    p, t = _labels(pred, true)
    if len(attacks) != len(t):
        raise ValueError(f"got {len(attacks)} attack types for {len(t)} samples")
    if any(a == "real" and y == "fake" for a, y in zip(attacks, t)):
        raise ValueError('a fake sample has attack type "real", the key kept for bona fide')
    keys = np.array(["real" if y == "real" else str(a) for a, y in zip(attacks, t)])
    return {k: float(np.mean(p[keys == k] != t[keys == k])) for k in sorted(set(keys))}


def jaccard(a, b) -> float:
    """Jaccard index of two tag sets (HIR-SDD, Eq. 1): J(A, B) = |A ∩ B| / |A ∪ B|.

    Duplicates are ignored (sets). Two empty sets give 1.0: a bona fide sample with no
    artifact tags, answered with no tags, is a perfect match.
    """
    if isinstance(a, str) or isinstance(b, str):   # set("A_B") would be a set of characters
        raise ValueError(f"jaccard takes collections of tags, not a string: {a!r}, {b!r}")
    a, b = set(a), set(b)
    return 1.0 if not (a or b) else len(a & b) / len(a | b)


def mean_jaccard(pred_tags, true_tags) -> float:
    """Mean of `jaccard` over samples; a None prediction (unreadable <reasons>) scores 0."""
    if len(pred_tags) != len(true_tags) or len(true_tags) == 0:
        raise ValueError(f"need equal, non-zero numbers of tag lists, "
                         f"got {len(pred_tags)} and {len(true_tags)}")
    scores = [0.0 if p is None else jaccard(p, t) for p, t in zip(pred_tags, true_tags)]
    return float(np.mean(scores))


def malformed_share(preds) -> float:
    """Share of malformed completions: #(pred is None) / n."""
    if len(preds) == 0:
        raise ValueError("malformed_share of an empty list")
    return float(np.mean([p is None for p in preds]))


def wasserstein_drift(emb_a, emb_b) -> float:
    """Drift between two pooled-embedding sets: per-dimension 1-D Wasserstein-1, averaged.

        W1(P_d, Q_d) = ∫_0^1 |F_d^{-1}(u) - G_d^{-1}(u)| du,   drift = (1/D) Σ_d W1(P_d, Q_d)
    with F_d^{-1}, G_d^{-1} the quantile functions of the empirical distributions of dimension d
    of emb_a (n, D) and emb_b (m, D). Both are step functions, constant between consecutive
    points of {i/n} ∪ {j/m}, so the integral is an exact finite sum; n != m is fine. This is
    the marginal estimator (it ignores dependence between dimensions), not the D-dimensional W1.
    """
    a, b = np.asarray(emb_a, dtype=np.float64), np.asarray(emb_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.size == 0 or b.size == 0:
        raise ValueError(f"need non-empty (n, D) and (m, D) embeddings, "
                         f"got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("embeddings contain NaN or inf")
    n, m = len(a), len(b)
    # Left ends of the pieces in integer units of 1/(n m): exact, no float near-duplicates.
    left = np.union1d(np.arange(n) * m, np.arange(m) * n)          # (K,), K <= n + m
    width = np.diff(np.append(left, n * m)) / (n * m)               # (K,), sums to 1
    qa = np.sort(a, axis=0)[left // m]                              # (K, D) F^{-1} on each piece
    qb = np.sort(b, axis=0)[left // n]                              # (K, D) G^{-1} on each piece
    return float(np.mean(width @ np.abs(qa - qb)))


# ----------------------------------------------------------------------------------------------
# Reports: score files and tables (stdlib only)
# ----------------------------------------------------------------------------------------------

def write_score_file(path, names, scores) -> None:
    """Write an ASVspoof 5 style score file: a `filename\\tcm-score` header, one trial a line.

    The file is overwritten, never appended to: a re-run must not mix old and new trials.
    """
    from pathlib import Path
    if len(names) != len(scores):
        raise ValueError(f"{path}: {len(names)} names but {len(scores)} scores")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["filename\tcm-score"] + [f"{Path(n).stem}\t{float(s):.6f}" for n, s in zip(names, scores)]
    path.write_text("\n".join(lines) + "\n")


def format_table(headers, rows) -> str:
    """A plain-text table with aligned columns (first column left, the others right)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]])
