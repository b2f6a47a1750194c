"""Trace → per-second counts → arrival times, as IPA replays them."""

import json

import numpy as np
import pytest

from loadgen import traces
from ipa_energy.messages import Shed
from loadgen.replay import Replay, per_second, row_from_response
from tests.unit.loadgen.answers import answer


def test_windows_are_ipas():
    """The shipped windows match shared/data/README.md's table (length and damped RPS range)."""
    table = {"bursty": (1200, 3.4, 34.2, 12.5), "steady_low": (1200, 3.1, 8.6, 5.5),
             "steady_high": (600, 23.9, 34.4, 29.3), "fluctuating": (1200, 3.5, 34.2, None)}
    for name, (seconds, lo, hi, mean) in table.items():
        rps = traces.rates(traces.twitter(name))
        assert len(rps) == seconds
        assert rps.min() == pytest.approx(lo, abs=0.06) and rps.max() == pytest.approx(hi, abs=0.06)
        if mean is not None:
            assert rps.mean() == pytest.approx(mean, abs=0.05)


@pytest.mark.parametrize("name,factor,offset,seconds", [("bursty", 0.15, 330, 120), ("steady_high", 0.5, 0, 600),
                                                       ("fluctuating", 0.037, 17, 400)])
def test_schedule_reproduces_scaled_counts_within_rounding(name, factor, offset, seconds):
    spec = traces.twitter(name, seconds, offset_s=offset, rate_factor=factor, seed=3)
    raw = traces.twitter_windows()[name][offset:offset + seconds]
    want = raw / 8 * factor
    counts, times = traces.schedule(spec)
    got = per_second(times, seconds)
    assert (got == counts).all()  # every arrival lands inside its own second
    assert np.abs(got - want).max() < 1.0  # each second within rounding of the scaled trace
    assert abs(got.sum() - want.sum()) <= 0.5  # and the total does not drift
    assert (np.diff(times) >= 0).all()


def test_arrivals_are_exponential_within_a_second():
    """Gaps of a constant 50 req/s trace look exponential (coefficient of variation ≈ 1), not uniform."""
    counts, times = traces.schedule(traces.parse_trace("constant:50", 60, seed=1))
    assert counts.tolist() == [50] * 60
    gaps = np.diff(times)
    assert 0.85 < gaps.std() / gaps.mean() < 1.15  # uniform spacing would give 0


def test_csv_traces(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("1\n2.5\n0\n4\n")
    assert traces.rates(traces.parse_trace(str(plain))).tolist() == [1, 2.5, 0, 4]
    headed = tmp_path / "headed.csv"
    headed.write_text("second,rps\n0,3\n1,5\n2,7\n")
    spec = traces.parse_trace(str(headed), rate_factor=2, offset_s=1)
    assert traces.rates(spec).tolist() == [10, 14] and spec.kind == "csv"


@pytest.mark.parametrize("text,error", [("nosuch", "unknown trace"), ("constant:x", "constant:RPS"),
                                         ("constant:-1", "rate > 0"), ("/nonexistent/t.csv", "not found")])
def test_bad_traces_say_what_is_wrong(text, error):
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        traces.parse_trace(text, 10)


def test_bad_csv(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("rps\n1\n-2\n")
    with pytest.raises(ValueError, match="≥ 0"):
        traces.parse_trace(str(bad))


def test_replay_hands_out_each_arrival_once_and_records(tmp_path):
    now = [1000.0]
    replay = Replay(traces.parse_trace("constant:3", 2), tmp_path / "r.jsonl", clock=lambda: now[0])
    replay.reset(lead_s=1.0)
    due = [replay.take() for _ in range(7)]
    assert due[6] is None and all(1001.0 <= d < 1003.0 for d in due[:6])
    assert not replay.over(drain_s=10)  # six in flight
    for d in due[:6]:
        replay.finished(row_from_response(d, d, d + 0.1, 200, answer({"s": "v"}, plan_version=2)))
    assert replay.over(drain_s=10)
    replay.close()
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 6 and '"plan_version":2' in lines[0]


def test_rows_from_answers():
    ok = row_from_response(1, 1, 1.25, 200, answer({"a": "b"}, energy={"j": 0.5, "method": "tdp-estimate"}))
    assert ok.latency_ms == pytest.approx(250) and ok.energy_j == 0.5 and ok.energy_method == "tdp-estimate"
    refused = row_from_response(1, 1, 1.1, 413, b'{"error": "too big"}')
    assert refused.status == 413 and "too big" in refused.error
    garbled = row_from_response(1, 1, 1.1, 200, b"<html>")
    assert garbled.status == 0 and "unreadable" in garbled.error
    not_an_answer = row_from_response(1, 1, 1.1, 200, b'{"variants": {"a": "b"}}')  # 200, but not a PipelineAnswer
    assert not_an_answer.status == 0 and "unreadable" in not_an_answer.error
    shed = row_from_response(1, 1, 1.01, 503, Shed(error="queue full", pipeline="p", stage="s", retry_after_s=2)
                             .model_dump_json().encode())
    assert shed.shed and shed.status == 503 and "queue full" in shed.error
    failed = row_from_response(1, 1, 1.1, 503, b'{"error": "stage \'s\' (v) failed: RayActorError"}')
    assert not failed.shed and failed.status == 503


def test_unanswered_requests_are_recorded_as_failed(tmp_path):
    now = [50.0]
    replay = Replay(traces.parse_trace("constant:2", 1), tmp_path / "r.jsonl", clock=lambda: now[0])
    first, second = replay.take(), replay.take()
    replay.finished(row_from_response(first, first, first + 0.1, 200, answer({"s": "v"})))
    now[0] = 120.0
    assert replay.over(drain_s=30)  # drain time over with one still in flight
    replay.close()
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == [200, 0]
    assert rows[1]["scheduled_s"] == second and "drain" in rows[1]["error"]
