"""fas_report.py: the shared / unseen HTER split by hand, the mean ± std over seeds against
numpy, and the tables and summary line built from them."""
import numpy as np
import pytest

from fas_report import group_hter, mean_std, summarize, summary_line, tables


def test_group_hter_by_hand():
    # 4 real (1 rejected: FRR 1/4); shared fakes: 2 print, 1 let through (FAR 1/2);
    # unseen fakes: 3 (1 mask, 2 makeup), 2 let through, one of them malformed (FAR 2/3)
    labels = ["real"] * 4 + ["fake"] * 5
    attacks = ["real"] * 4 + ["print", "print", "mask", "makeup", "makeup"]
    preds = ["real", "real", "fake", "real", "fake", "real", "real", "fake", None]
    out = group_hter(preds, labels, attacks, shared={"print", "cut"})
    assert out["hter_shared"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert out["hter_unseen"] == pytest.approx((1 / 4 + 2 / 3) / 2)
    assert out["far_shared"] == pytest.approx(1 / 2) and out["far_unseen"] == pytest.approx(2 / 3)
    # a source whose attack types cover every fake: no unseen group
    none = group_hter(preds, labels, attacks, shared={"print", "mask", "makeup"})
    assert none["hter_unseen"] is None and "far_unseen" not in none


def _report(seed, hters):
    results = {"cefa_to_hqwmca": {
        "zero_shot": dict(frr=0.0, far=0.5, hter=0.25, hter_shared=0.2, hter_unseen=0.3,
                          malformed=0.0, per_attack={"real": 0.0, "print": 0.5}),
        "sft": dict(frr=hters[0], far=hters[1], hter=sum(hters) / 2, hter_shared=hters[0],
                    hter_unseen=hters[1], malformed=0.0, per_attack={"real": hters[0]},
                    source_hter=0.05, best_step=50 * (seed + 1), dev_hter=0.1 + seed / 100)}}
    config = {"protocols": {"cefa_to_hqwmca": ["cefa_like", "hqwmca_like"]}}
    return dict(seed=seed, results=results, config=config)


def test_summarize_matches_numpy():
    reports = [_report(0, (0.1, 0.3)), _report(1, (0.2, 0.5)), _report(2, (0.15, 0.4))]
    summary, text = summarize(reports)
    hter = np.array([0.2, 0.35, 0.275])
    assert summary["cefa_to_hqwmca"]["sft"]["hter"] == pytest.approx((hter.mean(),
                                                                      hter.std(ddof=1)))
    assert summary["cefa_to_hqwmca"]["zero_shot"]["hter"] == (0.25, 0.0)
    assert "source_hter" not in summary["cefa_to_hqwmca"]["zero_shot"]
    assert f"{100 * hter.mean():.2f} ± {100 * hter.std(ddof=1):.2f}" in text
    assert mean_std([0.3]) == (0.3, 0.0)


def test_tables_and_summary_line():
    reports = [_report(0, (0.1, 0.3)), _report(1, (0.2, 0.5))]
    text = tables(reports[0]["results"])
    assert "HTER shared" in text and "Fig. 6" in text
    line = summary_line(reports, "runs/x")
    assert "sft/cefa_like 10.5 % @ step 50/100" in line          # dev 0.10 and 0.11
    assert "runs/x/seed<S>/<method>/<source>/best" in line and "runs/x/results.json" in line
