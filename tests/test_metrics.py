"""Metrics in eval.py against hand-worked numbers, loop versions, scikit-learn and closed forms."""
import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

import eval as E

# The worked example of the issue. Sorted: 0s 1b 1.5s 2b 2.5s 3b 4b 5b, so along the DET curve
# FRR = 0, 0, .2, .2, .4, .4, .6, .8, 1 and FAR = 1, 2/3, 2/3, 1/3, 1/3, 0, 0, 0, 0.
BONA, SPOOF = [1, 2, 3, 4, 5], [0, 1.5, 2.5]


def det_curve_loop(bona, spoof):
    """Plain-Python DET curve following the ASVspoof packages: sort trials by (score, bona
    first), reject the k lowest for k = 0..n."""
    trials = sorted([(s, 0) for s in bona] + [(s, 1) for s in spoof])   # 0 = bona sorts first
    frr, far, thr = [0.0], [1.0], [trials[0][0] - 0.001]
    for k in range(1, len(trials) + 1):
        rejected = trials[:k]
        frr.append(sum(1 for _, g in rejected if g == 0) / len(bona))
        far.append((len(spoof) - sum(1 for _, g in rejected if g == 1)) / len(spoof))
        thr.append(rejected[-1][0])
    return frr, far, thr


def eer_loop(bona, spoof):
    frr, far, thr = det_curve_loop(bona, spoof)
    best = 0
    for k in range(len(frr)):
        if abs(frr[k] - far[k]) < abs(frr[best] - far[best]):   # strict: the first minimum
            best = k
    return (frr[best] + far[best]) / 2, thr[best]


# ---- EER ----------------------------------------------------------------------------------

def test_eer_worked_example():
    eer, thr = E.compute_eer(BONA, SPOOF)
    assert eer == pytest.approx((0.4 + 1 / 3) / 2) and eer == pytest.approx(0.366667, abs=1e-6)
    assert thr == 2.0


def test_eer_ties_put_bona_fide_first():
    # Sorted 0s 1b 1s 2b: at the tie the bona fide 1 is rejected before the spoof 1, so the
    # curve passes FRR = FAR = 0.5. Had the spoof come first, FRR = FAR = 0 and EER = 0.
    assert E.compute_eer([1, 2], [0, 1]) == (0.5, 1.0)
    # A collapsed detector (all scores equal) gets EER 1.0 from the packages, not 0.5.
    assert E.compute_eer([1, 1], [1, 1]) == (1.0, 1.0)


@pytest.mark.parametrize("seed", range(8))
def test_eer_matches_loop_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_bona, n_spoof = rng.integers(1, 30, size=2)
    bona = rng.integers(0, 6, n_bona).astype(float)   # few distinct values: many ties
    spoof = rng.integers(-2, 4, n_spoof).astype(float)
    assert E.compute_eer(bona, spoof) == eer_loop(bona.tolist(), spoof.tolist())
    frr, far, thr = E.det_curve(bona, spoof)
    ref = det_curve_loop(bona.tolist(), spoof.tolist())
    np.testing.assert_array_equal(frr, ref[0])
    np.testing.assert_array_equal(far, ref[1])
    np.testing.assert_array_equal(thr, ref[2])


@pytest.mark.parametrize("seed", range(5))
def test_eer_matches_sklearn_roc_at_exact_crossing(seed):
    # Equal class sizes and no ties: FRR - FAR climbs from -1 to 1 in steps of 1/n, so one ROC
    # point has FRR == FAR exactly and the EER must be that value.
    rng = np.random.default_rng(seed)
    n = 40
    bona, spoof = rng.normal(1.0, 1.0, n), rng.normal(0.0, 1.0, n)
    fpr, tpr, thr = skm.roc_curve(np.r_[np.ones(n), np.zeros(n)], np.r_[bona, spoof],
                                  drop_intermediate=False)
    cross = np.flatnonzero(np.isclose(1 - tpr, fpr))
    assert len(cross) == 1
    eer, t = E.compute_eer(bona, spoof)
    assert eer == pytest.approx(fpr[cross[0]])
    # sklearn accepts s >= thr, the package rejects s <= t: t is the score just below sklearn's.
    assert t == np.max(np.r_[bona, spoof][np.r_[bona, spoof] < thr[cross[0]]])


def test_eer_bad_input():
    with pytest.raises(ValueError, match="bona_scores"):
        E.compute_eer([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        E.compute_eer([1.0, float("nan")], [0.0])
    with pytest.raises(ValueError, match="1-D"):
        E.compute_eer([[1.0, 2.0]], [0.0])


# ---- ASVspoof 5: minDCF, actDCF, Cllr ------------------------------------------------------

def test_min_dcf_worked_example():
    # Normalized DCF = 1.9 FRR + FAR along the curve above: 1, 2/3, 1.047, .713, ... -> 2/3
    # after rejecting the spoof at 0 only.
    value, thr = E.min_dcf(BONA, SPOOF)
    assert value == pytest.approx(2 / 3) and thr == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_min_dcf_brute_force_over_thresholds(seed):
    rng = np.random.default_rng(seed)
    bona, spoof = rng.normal(1, 1, 25), rng.normal(-1, 1.5, 17)   # continuous: no ties
    best = math.inf
    for t in np.r_[min(bona.min(), spoof.min()) - 0.001, bona, spoof]:   # reject s <= t
        dcf = 1 * 0.95 * np.mean(bona <= t) + 10 * 0.05 * np.mean(spoof > t)
        best = min(best, dcf / min(0.95, 0.5))
    assert E.min_dcf(bona, spoof)[0] == pytest.approx(best, rel=1e-12)
    # The same through the loop DET curve, ties included, for other costs.
    b, s = rng.integers(0, 5, 20).astype(float), rng.integers(-1, 3, 11).astype(float)
    frr, far, _ = det_curve_loop(b.tolist(), s.tolist())
    ref = min(2 * 0.8 * fr + 3 * 0.2 * fa for fr, fa in zip(frr, far)) / min(1.6, 0.6)
    assert E.min_dcf(b, s, p_spoof=0.2, c_miss=2, c_fa=3)[0] == pytest.approx(ref, rel=1e-12)


def test_act_dcf_hand_worked():
    t = -math.log(0.95 / 0.5)                      # Bayes threshold -log(1.9) = -0.6419
    # bona below t: {-1} -> P_miss 1/3; spoof at or above t: {-0.5, 1} -> P_fa 1/2.
    value, thr = E.act_dcf([-1, 0.5, 2], [-3, -0.5, 1, -0.7])
    assert thr == pytest.approx(t)
    assert value == pytest.approx((0.95 / 3 + 0.5 * 0.5) / 0.5)
    # A spoof exactly at the threshold is accepted (s >= t), a bona fide there is not missed.
    assert E.act_dcf([t], [t])[0] == pytest.approx(0.5 / 0.5)
    with pytest.raises(ValueError, match="p_spoof"):
        E.act_dcf([1.0], [0.0], p_spoof=1.0)


def test_cllr_hand_worked_and_package_formula():
    assert E.cllr([0.0], [0.0]) == pytest.approx(1.0)   # LLR 0: no information, 1 bit
    b, s = [2.0, -0.5], [-1.0, 3.0]
    hand = 0.5 * (np.mean(np.log2(1 + np.exp(-np.array(b)))) + np.mean(np.log2(1 + np.exp(s))))
    assert E.cllr(b, s) == pytest.approx(hand, rel=1e-12)


def test_cllr_of_calibrated_toy_is_conditional_entropy():
    # Bona fide score +a with prob 0.8, -a with 0.2; spoof the mirror image. Then the true
    # LLR of +a is log(0.8 / 0.2) = a, the scores are calibrated, and Cllr = H(0.8) bits.
    a = math.log(4.0)
    bona, spoof = [a] * 8 + [-a] * 2, [a] * 2 + [-a] * 8
    h = -(0.8 * math.log2(0.8) + 0.2 * math.log2(0.2))   # 0.7219
    assert E.cllr(bona, spoof) == pytest.approx(h)
    # Scaling the LLRs (over- or under-confident) can only cost more.
    for k in (0.5, 2.0):
        assert E.cllr(np.multiply(bona, k), np.multiply(spoof, k)) > h


def test_cllr_is_stable_for_huge_scores():
    # log(1 + e^1000) written naively overflows to inf; underflow of e^-1000 to 0 is harmless.
    with np.errstate(over="raise", invalid="raise"):
        assert E.cllr([1000.0], [-1000.0]) == 0.0
        assert E.cllr([-1000.0], [-1000.0]) == pytest.approx(0.5 * 1000 / math.log(2))


# ---- Hard-label metrics --------------------------------------------------------------------

def random_labels(seed, n=60):
    rng = np.random.default_rng(seed)
    true = rng.choice(["real", "fake"], n, p=[0.3, 0.7]).tolist()
    pred = rng.choice(["real", "fake", None], n, p=[0.4, 0.5, 0.1]).tolist()
    return pred, true


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed):
    pred, true = random_labels(seed)
    sk_pred = ["none" if p is None else p for p in pred]   # sklearn needs a string class
    assert E.accuracy(pred, true) == pytest.approx(skm.accuracy_score(true, sk_pred))
    with warnings.catch_warnings():   # "y_pred contains classes not in y_true": expected
        warnings.simplefilter("ignore")
        assert E.balanced_accuracy(pred, true) == pytest.approx(
            skm.balanced_accuracy_score(true, sk_pred))
    for pos in ("real", "fake"):
        ref = skm.f1_score(true, sk_pred, labels=[pos], average=None)[0]
        assert E.f1_score(pred, true, positive=pos) == pytest.approx(ref)


def test_f1_none_is_never_positive():
    # TP 1 (second), FP 1 (third), FN 1 (the None on a real sample) -> 2/(2+1+1).
    assert E.f1_score([None, "real", "real"], ["real", "real", "fake"]) == 0.5
    # A None on a fake sample costs F1 nothing but is wrong for accuracy.
    assert E.f1_score(["real", None], ["real", "fake"]) == 1.0
    assert E.accuracy(["real", None], ["real", "fake"]) == 0.5
    assert E.f1_score(["fake"], ["fake"]) == 0.0   # no positives at all: 0, like sklearn


def test_bad_labels():
    with pytest.raises(ValueError, match="'Real'"):
        E.accuracy(["real"], ["Real"])
    with pytest.raises(ValueError, match="equal"):
        E.accuracy(["real"], ["real", "fake"])
    with pytest.raises(ValueError, match="positive"):
        E.f1_score(["real"], ["real"], positive="bonafide")


def test_frr_far_hter_hand_worked():
    true = ["real"] * 4 + ["fake"] * 6
    pred = ["real", "fake", None, "real"] + ["fake", "fake", "real", None, "fake", "fake"]
    r = E.frr_far_hter(pred, true)
    assert (r.frr, r.far) == (0.5, pytest.approx(2 / 6))   # None is an error on both sides
    assert r.hter == pytest.approx((0.5 + 1 / 3) / 2)
    with pytest.raises(ValueError, match="one real and one fake"):
        E.frr_far_hter(["real"], ["real"])


def test_frr_far_hter_at_threshold():
    scores, true = [0.9, 0.5, 0.2, 0.5, 0.7, 0.1], ["real"] * 3 + ["fake"] * 3
    # score >= 0.5 -> real: reals 0.9, 0.5 accepted, 0.2 rejected; fakes 0.5, 0.7 accepted.
    assert E.frr_far_hter_at(scores, true, 0.5) == pytest.approx((1 / 3, 2 / 3, 0.5))


def test_per_attack_error_rates():
    true = ["real", "real", "fake", "fake", "fake", "fake"]
    pred = ["real", None, "real", "fake", "fake", "fake"]
    attacks = ["", "none", "print", "print", "replay", "makeup"]
    assert E.per_attack_error_rates(pred, true, attacks) == {
        "makeup": 0.0, "print": 0.5, "real": 0.5, "replay": 0.0}
    with pytest.raises(ValueError, match='"real"'):
        E.per_attack_error_rates(["fake"], ["fake"], ["real"])


def test_jaccard_cases():
    assert E.jaccard({"A", "B"}, {"B", "C"}) == pytest.approx(1 / 3)
    assert E.jaccard(["A", "A"], ["A"]) == 1.0          # duplicates ignored
    assert E.jaccard([], []) == 1.0                     # no tags vs no tags: perfect
    assert E.jaccard([], ["A"]) == 0.0
    assert E.mean_jaccard([["A"], None, []], [["A", "B"], [], []]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="string"):
        E.jaccard("STRANGE_VOICE", ["STRANGE_VOICE"])


def test_malformed_share():
    assert E.malformed_share(["real", None, "fake", None]) == 0.5
    with pytest.raises(ValueError):
        E.malformed_share([])


# ---- Wasserstein drift ----------------------------------------------------------------------

def w1_by_cdfs(x, y):
    """Independent 1-D W1 = ∫ |F(t) - G(t)| dt over the merged sample points."""
    pts = np.sort(np.r_[x, y])
    F = np.searchsorted(np.sort(x), pts[:-1], side="right") / len(x)
    G = np.searchsorted(np.sort(y), pts[:-1], side="right") / len(y)
    return np.sum(np.abs(F - G) * np.diff(pts))


def test_wasserstein_shift_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    c = np.array([0.5, -2.0, 0.0, 3.0])
    assert E.wasserstein_drift(x, x + c) == pytest.approx(np.mean(np.abs(c)))


def test_wasserstein_equal_n_is_mean_sorted_difference():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 3)), rng.exponential(size=(30, 3))
    ref = np.mean(np.abs(np.sort(a, axis=0) - np.sort(b, axis=0)))
    assert E.wasserstein_drift(a, b) == pytest.approx(ref)


def test_wasserstein_unequal_n_matches_cdf_integral():
    assert E.wasserstein_drift([[0.0]], [[0.0], [1.0]]) == 0.5
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(7, 5)), rng.normal(1, 2, size=(12, 5))
    ref = np.mean([w1_by_cdfs(a[:, d], b[:, d]) for d in range(5)])
    assert E.wasserstein_drift(a, b) == pytest.approx(ref)
    with pytest.raises(ValueError, match=r"\(n, D\)"):
        E.wasserstein_drift(a, b[:, :4])
