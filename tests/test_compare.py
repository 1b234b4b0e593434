"""Paired bootstrap of two evaluations (fslora.compare): hand-checkable cases and the CLI's errors."""

import json
import random

import numpy as np
import pytest

from fslora.compare import main
from fslora.evaluation.compare import compare_reports, load_report, paired_bootstrap


def report(aps: list[float], top1: list[bool], split: str = "synthps-standard-seed1") -> dict:
    per_query = [
        {"query": i, "image": f"img{i}.jpg", "pid": i % 7, "ap": ap, "top1": hit, "top5": True}
        for i, (ap, hit) in enumerate(zip(aps, top1, strict=True))
    ]
    return {"split": split, "model": "m", "metrics": {}, "per_query": per_query}


def test_identical_figures_differ_by_exactly_zero():
    r = paired_bootstrap([0.2, 0.5, 0.9], [0.2, 0.5, 0.9], resamples=500)
    assert (r.difference, r.ci_low, r.ci_high) == (0.0, 0.0, 0.0)
    assert r.share_a_ahead == 0.5 and not r.significant


def test_a_uniformly_better_is_significant():
    b = np.linspace(0.0, 0.8, 40)
    r = paired_bootstrap(b + 0.1, b, resamples=500)
    assert r.difference == pytest.approx(0.1)
    assert r.ci_low == pytest.approx(0.1) and r.ci_high == pytest.approx(0.1)
    assert r.share_a_ahead == 1.0 and r.significant
    assert r.a == pytest.approx(0.5) and r.b == pytest.approx(0.4) and r.num_queries == 40


def test_two_opposite_queries_give_the_textbook_bootstrap():
    # differences (+1, -1): resampled means are +1, 0, -1 with probabilities 1/4, 1/2, 1/4
    r = paired_bootstrap([1.0, 0.0], [0.0, 1.0], resamples=20_000, seed=3)
    assert r.difference == 0.0
    assert (r.ci_low, r.ci_high) == (-1.0, 1.0)
    assert r.share_a_ahead == pytest.approx(0.5, abs=0.02)
    assert not r.significant


def test_one_small_win_among_many_ties_is_not_significant():
    b = [0.5] * 100
    a = [0.5] * 99 + [0.6]
    r = paired_bootstrap(a, b, resamples=2000)
    assert r.difference == pytest.approx(0.001)
    assert r.ci_low == 0.0 and not r.significant


def test_bad_lists_are_refused():
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="no queries"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap([0.1], [0.2], resamples=0)


def test_reports_pair_queries_by_identity_not_by_order():
    a = report([0.9, 0.1, 0.5, 0.7], [True, False, True, True])
    b = report([0.3, 0.2, 0.5, 0.4], [False, False, True, False])
    shuffled = dict(b, per_query=random.Random(0).sample(b["per_query"], 4))
    results = {r.metric: r for r in compare_reports(a, shuffled, resamples=500)}
    assert set(results) == {"mAP", "top1", "top5"}  # top10 is in neither report
    assert results["mAP"].difference == pytest.approx((0.6 - 0.1 + 0.0 + 0.3) / 4)
    assert results["top1"].difference == pytest.approx(2 / 4)
    assert results["top5"].difference == 0.0


def test_incomparable_reports_name_the_problem():
    a = report([0.9, 0.1], [True, False])
    with pytest.raises(ValueError, match="same split"):
        compare_reports(a, report([0.9, 0.1], [True, False], split="other"))
    with pytest.raises(ValueError, match=r"different queries \(1 only in A, 0 only in B\)"):
        compare_reports(a, dict(a, per_query=a["per_query"][:1]))


def test_cli_prints_and_writes_the_comparison(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(report([0.9, 0.8, 0.7], [True, True, False])))
    b.write_text(json.dumps(report([0.4, 0.3, 0.2], [False, False, False])))
    out = tmp_path / "cmp" / "ab.json"
    assert main([str(a), str(b), "--resamples", "300", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mAP" in printed and "+50.00" in printed and "3 paired queries" in printed
    written = json.loads(out.read_text())
    by_metric = {r["metric"]: r for r in written["results"]}
    assert by_metric["mAP"]["difference"] == pytest.approx(0.5) and by_metric["mAP"]["significant"] is True


def test_cli_refuses_reports_without_per_query_figures(tmp_path, capsys):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"split": "s", "metrics": {"mAP": 0.1}}))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(report([0.5], [True])))
    assert main([str(old), str(good)]) == 2
    assert "no 'per_query' list" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main([str(good), str(broken)]) == 2
    assert "not a JSON evaluation report" in capsys.readouterr().err
    assert main([str(good), str(tmp_path / "missing.json")]) == 2
    with pytest.raises(FileNotFoundError):
        load_report(tmp_path / "missing.json")
