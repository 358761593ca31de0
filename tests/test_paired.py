"""The paired verdict of ``attnbench ab`` on synthetic ratios: exact values, then its error rates.

Independent brute-force computations (Walsh averages by itertools, the signed-rank distribution by
enumerating sign patterns, scipy's Wilcoxon and Welch tests) are the references.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from attnbench.ab import (cases_to_confirm, confirmation_schedule, make_schedule, pair_cases, rounds_for_call,
                          spread_rounds, stage_case)
from attnbench.paired import (compare_rounds, confirmed_verdict, detectable_slowdown, interval_rank, min_rounds, paired_verdict,
                              robust_sd, signed_rank_null, signed_rank_p)
from attnbench import UserError
from synthetic_runs import case


def brute_null(n: int) -> list[int]:
    counts = [0] * (n * (n + 1) // 2 + 1)
    for signs in itertools.product((0, 1), repeat=n):
        counts[sum(r for r, s in zip(range(1, n + 1), signs) if s)] += 1
    return counts


def brute_walsh(d) -> list[float]:
    return sorted((a + b) / 2 for a, b in itertools.combinations_with_replacement(d, 2))


@pytest.mark.parametrize("n", [1, 3, 6, 9])
def test_signed_rank_null_matches_enumeration(n):
    assert list(signed_rank_null(n)) == brute_null(n)


def test_interval_rank_and_minimum_rounds():
    # t = largest value with P(T+ <= t) <= 2.5 %: n=8 -> 3 (5/256 <= .025 < 7/256), n=10 -> 8
    assert interval_rank(8, 0.95) == 3
    assert interval_rank(10, 0.95) == 8
    assert interval_rank(5, 0.95) is None  # 1/32 > 2.5 %
    assert min_rounds(0.95) == 6
    assert min_rounds(0.90) == 5


def test_signed_rank_p_matches_scipy_exact():
    d = [0.031, -0.012, 0.054, 0.021, 0.008, -0.004, 0.043, 0.017, 0.026, -0.019]
    assert signed_rank_p(d) == pytest.approx(sps.wilcoxon(d, method="exact").pvalue, abs=1e-12)
    assert signed_rank_p([0.1] * 0 + [0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11, 0.12]) == pytest.approx(2 / 256)


def test_paired_verdict_regression_exact_values():
    d = [0.10, 0.12, 0.08, 0.11, 0.09, 0.105, 0.13, 0.07]
    est = paired_verdict(np.exp(d), threshold=0.05)
    w = brute_walsh(d)
    assert est.ratio == pytest.approx(math.exp(np.median(w)), rel=1e-12)
    assert est.ci_low == pytest.approx(math.exp(w[3]), rel=1e-12)  # (t+1)-th smallest, t = 3
    assert est.ci_high == pytest.approx(math.exp(w[-4]), rel=1e-12)
    assert est.p_value == pytest.approx(2 / 256)
    assert est.verdict == "regression"
    assert est.n_base == est.n_new == 8
    assert np.median(w) == pytest.approx(0.10)
    assert est.reason == "slower by 10.5%, 95% CI [1.083, 1.127] (8 paired rounds, signed-rank p=0.0078)"


def test_paired_verdict_improvement_is_the_mirror():
    d = [-0.10, -0.12, -0.08, -0.11, -0.09, -0.105, -0.13, -0.07]
    est = paired_verdict(np.exp(d), threshold=0.05)
    assert est.verdict == "improvement"
    assert est.ratio == pytest.approx(math.exp(np.median(brute_walsh(d))), rel=1e-12)
    assert est.ci_high < 1


def test_paired_verdict_noise_is_unchanged_and_big_noisy_change_inconclusive():
    quiet = paired_verdict(np.exp([0.01, -0.02, 0.015, -0.005, 0.0, 0.02, -0.01, 0.005]), threshold=0.05)
    assert quiet.verdict == "unchanged"
    assert quiet.ci_low < 1 < quiet.ci_high
    noisy = paired_verdict(np.exp([0.3, -0.2, 0.25, 0.2, -0.15, 0.35, 0.1, -0.1]), threshold=0.05)
    assert noisy.ratio > 1.05 and noisy.ci_low < 1
    assert noisy.verdict == "inconclusive"
    assert "contains 1" in noisy.reason


def test_paired_verdict_too_few_rounds_says_how_many():
    est = paired_verdict(np.exp([0.5] * 5), threshold=0.05)
    assert est.verdict == "inconclusive"
    assert est.reason == "5 rounds cannot give a 95% interval; use at least 6 rounds"
    assert est.ratio == pytest.approx(math.exp(0.5))


def test_paired_verdict_rejects_bad_arguments():
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        paired_verdict([1.0] * 8, threshold=-0.1)
    with pytest.raises(ValueError, match="confidence must lie in"):
        paired_verdict([1.0] * 8, confidence=1.0)


def test_error_rates_on_synthetic_rounds():
    """3 % lognormal noise per round ratio, 10 rounds: A/A false alarms <= 1 %, a 10 % slowdown caught >= 99 %."""
    rng = np.random.default_rng(0)
    trials, rounds, sigma = 2000, 10, 0.03
    noise = rng.normal(0.0, sigma, size=(trials, rounds))
    aa = [paired_verdict(np.exp(row), threshold=0.03).verdict for row in noise]
    slow = [paired_verdict(np.exp(row + math.log(1.10)), threshold=0.03).verdict for row in noise]
    assert sum(v == "regression" for v in aa) / trials <= 0.01
    assert sum(v == "regression" for v in slow) / trials >= 0.99


def test_compare_rounds_is_welch_on_log_round_medians():
    base, new = [1.00, 1.10, 1.05, 0.98], [1.20, 1.25, 1.30]
    est = compare_rounds(base, new, threshold=0.05)
    ref = sps.ttest_ind(np.log(new), np.log(base), equal_var=False)
    assert est.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert est.ratio == pytest.approx(math.exp(np.mean(np.log(new)) - np.mean(np.log(base))), rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert (est.ci_low, est.ci_high) == pytest.approx((math.exp(ci.low), math.exp(ci.high)), rel=1e-9)
    assert est.verdict == "regression"
    assert compare_rounds([1.0], [2.0]).reason == "fewer than 2 rounds on a side"


def test_detectable_slowdown_formula():
    d = [-0.04, -0.02, -0.01, 0.0, 0.0, 0.01, 0.02, 0.04, 0.03, -0.03]
    sigma = 1.4826 * np.median(np.abs(np.asarray(d) - np.median(d)))
    assert robust_sd(d) == pytest.approx(sigma)
    se = math.sqrt(math.pi / 3) * sigma / math.sqrt(10)
    half = sps.t.ppf(0.975, 9) * se
    z = sps.norm.ppf(0.95)
    assert detectable_slowdown(d, threshold=0.0) == pytest.approx(math.expm1(half + z * se))
    assert detectable_slowdown(d, threshold=0.05) == pytest.approx(math.expm1(math.log(1.05) + z * se))
    assert detectable_slowdown(np.asarray(d) * 2, threshold=0.0) > detectable_slowdown(d, threshold=0.0)


def test_schedule_alternates_sides_abba_and_is_seeded():
    sched = make_schedule(5, 8, seed=3)
    assert sched == make_schedule(5, 8, seed=3)
    assert sched != make_schedule(5, 8, seed=4)
    assert len(sched) == 5 * 8 * 2
    for r in range(8):
        in_round = [(i, s) for rr, i, s in sched if rr == r]
        assert sorted(in_round) == sorted((i, s) for i in range(5) for s in ("base", "head"))
    for i in range(5):
        firsts = [next(s for rr, ii, s in sched if rr == r and ii == i) for r in range(8)]
        a = firsts[0]
        b = "head" if a == "base" else "base"
        assert firsts == [a, b, b, a, a, b, b, a]  # ABBA over rounds
    orders = {tuple(i for rr, i, s in sched if rr == r and s == "base") for r in range(8)}
    assert len(orders) > 1  # the case order changes between rounds


def test_pair_cases_by_key_and_by_variant():
    base = [case("global", 14), case("swin", 14), case("axial", 14)]
    head = [case("global", 14), case("swin", 14), case("pale", 14)]
    pairs, only_b, only_h = pair_cases(base, head, None)
    assert [(b.label, h.label) for b, h in pairs] == [("global", "global"), ("swin", "swin")]
    assert [c.label for c in only_b] == ["axial"] and [c.label for c in only_h] == ["pale"]
    cases = [case("native", 14, mechanism="global"), case("flex", 14, mechanism="global"),
             case("native", 28, mechanism="global")]
    pairs, only_b, only_h = pair_cases(cases, cases, ("native", "flex"))
    assert [(b.label, h.label, b.height) for b, h in pairs] == [("native", "flex", 14)]
    assert [c.height for c in only_b] == [28] and only_h == []
    with pytest.raises(UserError, match="--variant: no case of the suite has the label 'sdpa'"):
        pair_cases(cases, cases, ("native", "sdpa"))


def _session(tmp_path, same_code: bool, ratios: dict[str, list[float]]):
    """A finished ab Session built by hand: what abreport turns into verdicts, without measuring."""
    from dataclasses import replace

    from attnbench.ab import Pair, Session, Side
    from attnbench.abtrees import Ref

    base_ref = Ref("main", "a" * 40)
    head_ref = base_ref if same_code else Ref("HEAD", "b" * 40)
    sides = {"base": Side("base", base_ref, tmp_path), "head": Side("head", head_ref, tmp_path)}
    pairs, rows = [], {}
    for label in ratios:
        c = case(label, 14)
        p = Pair(c, c, replace(c, label=f"{label} [base]"), replace(c, label=f"{label} [head]"))
        pairs.append(p)
        for row_case, lat in ((p.base_row, 1.0), (p.head_row, float(np.median(ratios[label])))):
            rows[row_case.key()] = {"case_key": row_case.key(), **row_case.id_row(), "status": "ok", "error": None,
                                    "latency_ms": lat, "macs": 1000, "params": 10}
    return Session(run_dir=tmp_path, sides=sides, pairs=pairs, rows=rows,
                   ratios={i: ratios[label] for i, label in enumerate(ratios)}, only_base=[], only_head=[],
                   rounds=8, seed=0, variant=None, wall_s=12.0)


def test_abreport_verdicts_exit_code_and_files(tmp_path):
    from attnbench import abreport

    slow = list(np.exp([0.10, 0.12, 0.08, 0.11, 0.09, 0.105, 0.13, 0.07]))
    same = list(np.exp([0.01, -0.02, 0.015, -0.005, 0.0, 0.02, -0.01, 0.005]))
    session = _session(tmp_path, same_code=False, ratios={"swin": slow, "axial": same})
    comp = abreport.findings(session, threshold=0.05, confidence=0.95)
    lat = {f.case: f.verdict for f in comp.findings if f.metric == "latency_ms"}
    assert lat == {"swin 14x14 float32 forward": "regression", "axial 14x14 float32 forward": "unchanged"}
    assert {f.metric for f in comp.findings} == {"latency_ms", "macs", "params"}
    assert comp.exit_code == 1
    text = abreport.render(session, comp, "text")
    assert text.startswith("attnbench ab: base main (aaaaaaa) vs head HEAD (bbbbbbb); 2 cases x 8 rounds in 12 s")
    assert "Calibration" not in text
    abreport.write(session, comp)
    assert pd.read_csv(tmp_path / "ab.csv")["verdict"].tolist()[0] == "regression"
    assert (tmp_path / "ab.md").read_text().startswith("_attnbench ab: base main (aaaaaaa)")
    assert not (tmp_path / "calibration.csv").exists()


def test_abreport_calibration_of_an_aa_session(tmp_path):
    from attnbench import abreport

    quiet = list(np.exp([0.01, -0.02, 0.015, -0.005, 0.0, 0.02, -0.01, 0.005]))
    odd = list(np.exp([0.06, 0.07, 0.065, 0.055, 0.08, 0.06, 0.075, 0.07]))  # a false alarm
    session = _session(tmp_path, same_code=True, ratios={"global": quiet, "pale": odd})
    comp = abreport.findings(session, threshold=0.05, confidence=0.95)
    frame, summary = abreport.calibration(session, comp)
    assert summary["flagged"] == 1 and summary["cases"] == 2 and summary["rate"] == 0.5
    hl = math.exp(np.median(brute_walsh(np.log(odd))))
    assert summary["largest_change"] == pytest.approx(hl - 1)
    assert summary["suggested_threshold"] == math.ceil((hl - 1) * 200) / 200
    row = frame.set_index("case").loc["global 14x14 float32 forward"]
    assert row["detectable_at_threshold"] == pytest.approx(detectable_slowdown(np.log(quiet), threshold=0.05))
    text = abreport.render(session, comp, "md")
    assert "### Calibration (A/A: the same commit on both sides)" in text
    assert "False alarms: 1 of 2 cases (50.0%) flagged at threshold 5.0%." in text
    abreport.write(session, comp)
    assert len(pd.read_csv(tmp_path / "calibration.csv")) == 2


def test_spread_rounds_cover_the_session():
    assert spread_rounds(16, 16) == list(range(16))
    assert spread_rounds(8, 16) == [0, 2, 4, 6, 9, 11, 13, 15]
    assert spread_rounds(6, 16) == [0, 3, 6, 9, 12, 15]
    assert spread_rounds(1, 16) == [0] and spread_rounds(40, 16) == list(range(16))


def test_rounds_for_call_keeps_every_round_while_a_call_fits():
    # budget 0.3 s over 16 rounds: 18.75 ms a round
    b = 0.3 / 16
    assert rounds_for_call(0.010, b, 16, 8) == 16
    assert rounds_for_call(b, b, 16, 8) == 16
    assert rounds_for_call(0.025, b, 16, 8) == 12  # ceil(0.3 / 0.025)
    assert rounds_for_call(0.040, b, 16, 8) == 8  # ceil(7.5), the floor
    assert rounds_for_call(1.0, b, 16, 8) == 8 and rounds_for_call(1.0, b, 16, 6) == 6
    assert rounds_for_call(float("nan"), b, 16, 8) == 16  # nothing measured: no cap


def test_schedule_with_fewer_rounds_for_some_cases():
    full = make_schedule(4, 16, seed=7)
    capped = make_schedule(4, 16, seed=7, rounds_of={1: 8, 3: 6})
    assert [e for e in capped if e[0] == 0] == [e for e in full if e[0] == 0]  # round 0 does not depend on caps
    for i, n in ((0, 16), (1, 8), (2, 16), (3, 6)):
        mine = [(r, s) for r, ii, s in capped if ii == i]
        assert sorted({r for r, _ in mine}) == spread_rounds(n, 16)
        firsts = [mine[k][1] for k in range(0, len(mine), 2)]
        a, b = firsts[0], ("head" if firsts[0] == "base" else "base")
        assert firsts == ([a, b, b, a] * 4)[:n]  # ABBA over the case's own rounds
        assert all(mine[k][0] == mine[k + 1][0] and mine[k][1] != mine[k + 1][1] for k in range(0, len(mine), 2))


def test_only_calls_short_next_to_the_round_budget_are_staged():
    b = 0.3 / 16
    assert stage_case(0.001, b) and stage_case(0.004, b)
    assert not stage_case(0.005, b) and not stage_case(1.0, b)  # a quarter of 18.75 ms is 4.7 ms
    assert not stage_case(float("nan"), b) and not stage_case(0.0, b)


# Ratios of a real +5 % slowdown with two burst rounds (the shape of the misses in the calibrations:
# results/ab-calibration/, abcal-s6 inj5_b 28²), and of an unchanged case.
BURST = [1.006, 0.895, 1.038, 1.04, 1.089, 1.019, 1.059, 0.781, 1.081, 0.994, 1.031, 1.054, 1.062, 1.039, 1.091, 1.033]
CLEAN = [1.05, 1.04, 1.06, 1.045, 1.055, 1.03, 1.07, 1.05]


def test_confirmation_decides_only_an_inconclusive_case_from_its_own_rounds():
    first = paired_verdict(BURST, threshold=0.02)
    assert first.verdict == "inconclusive" and first.ci_low < 1 < first.ci_high
    est = confirmed_verdict(BURST, CLEAN, threshold=0.02)
    alone = paired_verdict(CLEAN, threshold=0.02)
    assert est.verdict == "regression" and (est.ratio, est.ci_low, est.ci_high, est.n_base) == (
        alone.ratio, alone.ci_low, alone.ci_high, 8)
    assert est.reason.startswith(alone.reason)
    assert (f"; inconclusive in 16 rounds ({first.ratio - 1:+.1%}, 95% CI [{first.ci_low:.3f}, {first.ci_high:.3f}]); "
            "judged from 8 confirmation rounds") in est.reason
    # no confirmation rounds, no change
    assert confirmed_verdict(BURST, [], threshold=0.02) == first
    # confirmation rounds that are themselves noisy leave it inconclusive, not pooled into a regression
    assert confirmed_verdict(BURST, BURST, threshold=0.02).verdict == "inconclusive"


# An unchanged case's rounds, and ones that read 3 % faster.
FLAT = [1.0, 1.004, 0.997, 1.002, 0.999, 1.001, 0.996, 1.003]
FASTER = [0.97, 0.975, 0.965, 0.972, 0.968, 0.971, 0.969, 0.974]


def test_a_flag_stands_unless_its_confirmation_rounds_contradict_it():
    flagged = paired_verdict(CLEAN, threshold=0.02)
    assert flagged.verdict == "regression"
    kept = confirmed_verdict(CLEAN, CLEAN[::-1], threshold=0.02)  # confirmed: the same verdict
    assert kept.verdict == "regression" and (kept.ratio, kept.ci_low, kept.n_base) == (
        flagged.ratio, flagged.ci_low, flagged.n_base)
    assert kept.reason.startswith(flagged.reason) and "; confirmed: regression in 8 confirmation rounds (+5.0%" in kept.reason
    noisy = confirmed_verdict(CLEAN, BURST, threshold=0.02)  # inconclusive confirmation: the flag stands
    assert noisy.verdict == "regression" and "; confirmed: inconclusive in 16 confirmation rounds" in noisy.reason
    for other, word in ((FLAT, "unchanged"), (FASTER, "improvement")):  # contradicted: inconclusive
        est = confirmed_verdict(CLEAN, other, threshold=0.02)
        assert paired_verdict(other, threshold=0.02).verdict == word
        assert est.verdict == "inconclusive" and est.ratio == flagged.ratio
        assert f"; not confirmed: {word} in 8 confirmation rounds" in est.reason
    # an unchanged case is never re-judged, whatever rounds follow
    assert confirmed_verdict(FLAT, CLEAN, threshold=0.02) == paired_verdict(FLAT, threshold=0.02)


def test_two_stage_false_alarms_stay_near_one_stage_on_synthetic_rounds():
    """A/A rounds with bursts: the confirmation adds at most P(inconclusive) x alpha to the false alarms,
    and catches +5 % that bursts hid."""
    rng = np.random.default_rng(11)

    def rounds(shift, n=16):
        d = rng.normal(shift, 0.03, n)
        burst = rng.random(n) < 0.08
        d[burst] += rng.choice([-1, 1], burst.sum()) * rng.uniform(0.1, 0.3, burst.sum())
        return np.exp(d)

    def rate(shift, confirm):
        hits = 0
        for _ in range(2000):
            first = rounds(shift)
            hits += confirmed_verdict(first, rounds(shift) if confirm else [], threshold=0.02).verdict == "regression"
        return hits / 2000

    aa1, aa2 = rate(0.0, False), rate(0.0, True)
    det1, det2 = rate(math.log(1.05), False), rate(math.log(1.05), True)
    assert aa2 < aa1 and aa2 < 0.01  # flags must survive a second look: fewer false alarms, not more
    assert det2 > det1 and det2 >= 0.97


def test_cases_to_confirm_are_the_inconclusive_and_flagged_ones():
    ratios = {0: BURST, 1: CLEAN, 2: [1.0, 1.01, 0.99, 1.0, 1.005, 0.995], 3: BURST, 4: []}
    # 0 inconclusive, 1 a regression, 2 unchanged, 3 failed on a side, 4 never measured
    assert cases_to_confirm(ratios, {0: 16, 3: 8}, None, failed={3}, threshold=0.02, confidence=0.95) == {0: 16, 1: 8}
    assert cases_to_confirm(ratios, {}, 10, failed=set(), threshold=0.02, confidence=0.95) == {0: 10, 1: 10, 3: 10}
    assert cases_to_confirm(ratios, {}, 0, failed=set(), threshold=0.02, confidence=0.95) == {}


def test_confirmation_schedule_follows_the_sessions_rounds_and_is_abba():
    sched = confirmation_schedule({5: 8, 2: 6}, first_round=16, seed=3)
    assert {r for r, _, _ in sched} == set(range(16, 24))
    for i, n in ((5, 8), (2, 6)):
        mine = [(r, s) for r, ii, s in sched if ii == i]
        assert sorted({r - 16 for r, _ in mine}) == spread_rounds(n, 8) and len(mine) == 2 * n
        firsts = [mine[k][1] for k in range(0, len(mine), 2)]
        a, b = firsts[0], ("head" if firsts[0] == "base" else "base")
        assert firsts == ([a, b, b, a] * 2)[:n]
    assert sched == confirmation_schedule({5: 8, 2: 6}, first_round=16, seed=3)
    assert confirmation_schedule({}, 16, 3) == []


def test_abreport_judges_a_confirmed_case_from_its_confirmation_rounds(tmp_path):
    from attnbench import abreport

    session = _session(tmp_path, same_code=False, ratios={"swin": BURST, "axial": CLEAN})
    session.rounds = 16
    session.confirm_ratios = {0: CLEAN}
    comp = abreport.findings(session, threshold=0.02, confidence=0.95)
    swin = next(f for f in comp.findings if f.metric == "latency_ms" and f.case.startswith("swin"))
    assert swin.verdict == "regression" and "judged from 8 confirmation rounds" in swin.note
    assert comp.exit_code == 1
    text = abreport.render(session, comp, "text")
    assert "2 cases x 16 rounds (+ 8 confirmation rounds for 1 case) in 12 s" in text
    assert ("; 8 confirmation rounds for 1 case not unchanged after their rounds: an inconclusive one judged from "
            "its confirmation rounds alone, a flagged one kept unless they contradict it.") in text
