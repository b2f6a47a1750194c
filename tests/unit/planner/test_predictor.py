"""Load predictor (planner.predictor) and the full Twitter trace it trains on (loadgen.traces)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from planner import predictor as P
from loadgen import traces as T

torch.set_num_threads(1)

TRACE_MISSING = not T.DEFAULT_TRACE.is_file()
needs_trace = pytest.mark.skipif(
    TRACE_MISSING, reason=f"Twitter trace not present at {T.DEFAULT_TRACE} (shared/data)"
)


def _ipa_get_x_y(data, history=120, step=10):
    """IPA's get_x_y (prediction-modules/lstm-module/train.py), restricted to full targets."""
    xs, ys = [], []
    for i in range(0, len(data) - history - 2 * step + 1, step):
        t = data[i : i + history]
        xs.append([max(t[j : j + step]) for j in range(0, len(t), step)])
        ys.append(max(data[i + history : i + history + 2 * step]))
    return np.array(xs, dtype=np.float32), np.array(ys, dtype=np.float32)


def _untrained_lstm(seed=0):
    torch.manual_seed(seed)
    return P.LSTMPredictor(P._LSTMNet(), scale=10.0)


# ---------------------------------------------------------------- dataset


def test_dataset_shapes_and_values_ramp():
    trace = np.arange(1, 301, dtype=np.float64)  # value at second i is i+1
    X, y = P.make_dataset(trace, step_s=10)
    assert X.shape == (17, 12) and y.shape == (17,)  # starts 0,10,...,160 (160+140=300)
    assert X.dtype == np.float32 and y.dtype == np.float32
    np.testing.assert_array_equal(X[0], np.arange(10, 121, 10))  # slice maxima
    assert y[0] == 140  # max of seconds 120..139 -> value 140
    np.testing.assert_array_equal(X[3], np.arange(40, 151, 10))
    assert y[3] == 170


def test_dataset_matches_ipa_loop_on_random_trace():
    rng = np.random.default_rng(1)
    trace = rng.integers(1, 50, size=2000).astype(np.float64)
    X, y = P.make_dataset(trace, step_s=10)
    Xr, yr = _ipa_get_x_y(list(trace))
    np.testing.assert_array_equal(X, Xr)
    np.testing.assert_array_equal(y, yr)
    X30, y30 = P.make_dataset(trace, step_s=30)
    np.testing.assert_array_equal(X30, Xr[::3])
    np.testing.assert_array_equal(y30, yr[::3])


def test_dataset_range_and_gap_dropping():
    trace = np.full(1000, 5.0)
    X, y = P.make_dataset(trace, step_s=10, start_s=200, end_s=600)
    assert len(y) == (400 - 140) // 10 + 1
    trace[500] = 0.0  # a missing second
    Xg, yg = P.make_dataset(trace, step_s=10)
    Xa, _ = P.make_dataset(trace, step_s=10, drop_gaps=False)
    assert len(Xg) < len(Xa)
    assert (Xg > 0).all() and (yg > 0).all()
    assert len(Xa) - len(Xg) == 14  # starts 370..500 have second 500 in their 140 s span


# ---------------------------------------------------------------- baselines / fallback


def test_reactive_is_last_10s_max():
    r = P.ReactivePredictor()
    h = np.array([100.0] + [1.0] * 20 + [3, 7, 2, 1, 1, 1, 1, 1, 1, 4], dtype=float)
    assert r.predict(h) == 7.0
    assert r.predict(np.array([2.0, 9.0])) == 9.0  # < 10 s of history
    assert r.predict(np.array([])) == 0.0
    X = np.arange(24, dtype=float).reshape(2, 12)
    np.testing.assert_array_equal(r.predict_slices(X), [11.0, 23.0])


def test_max_uses_at_most_120s():
    m = P.MaxPredictor()
    h = np.concatenate([[500.0], np.full(119, 2.0), [3.0]])  # 121 s; the 500 is 121 s old
    assert m.predict(h) == 3.0
    assert m.predict(h[:50]) == 500.0
    assert m.predict(np.array([])) == 0.0


def test_lstm_falls_back_to_max_before_120s():
    lstm = _untrained_lstm()
    rng = np.random.default_rng(0)
    h = rng.uniform(1, 30, size=200)
    for n in (1, 10, 60, 119):
        assert lstm.predict(h[:n]) == P.MaxPredictor().predict(h[:n])
    full = lstm.predict(h[:120])
    assert full == pytest.approx(float(lstm.predict_slices(P.slice_maxima(h[:120])[None])[0]))
    assert full != P.MaxPredictor().predict(h[:120])


def test_slice_maxima_aligned_to_newest():
    h = np.arange(1, 126, dtype=float)  # 125 s: the oldest 5 s are not in a full slice
    s = P.slice_maxima(h)
    assert len(s) == 12 and s[-1] == 125 and s[0] == 15
    assert len(P.slice_maxima(h[:35])) == 3


def test_predict_slices_consistent_with_predict():
    rng = np.random.default_rng(3)
    trace = rng.uniform(1, 40, size=600)
    X, _ = P.make_dataset(trace, step_s=50)
    lstm = _untrained_lstm()
    for k, i in enumerate(range(0, 600 - 140 + 1, 50)):
        hist = trace[i : i + 120]
        for p in (lstm, P.ReactivePredictor(), P.MaxPredictor()):
            assert p.predict(hist) == pytest.approx(float(p.predict_slices(X[k : k + 1])[0]),
                                                    rel=1e-5)


def test_evaluate_constant_trace():
    trace = np.full(3 * 86400 // 100, 7.0)
    res = P.evaluate([P.ReactivePredictor(), P.MaxPredictor()], trace, 0, 1, step_s=100)
    assert res == {"reactive": 0.0, "max": 0.0}
    assert P.mape(np.array([0.0, 10.0]), np.array([5.0, 12.0])) == pytest.approx(20.0)


# ---------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path):
    lstm = _untrained_lstm(seed=5)
    lstm.scale = 12.5
    path = lstm.save(tmp_path / "w.pt")
    st = torch.load(path, weights_only=True)  # plain tensors / numbers only
    assert st["hidden"] == 25 and st["n_slices"] == 12
    back = P.LSTMPredictor.load(path)
    assert back.scale == 12.5
    rng = np.random.default_rng(2)
    X = rng.uniform(1, 40, size=(50, 12)).astype(np.float32)
    np.testing.assert_array_equal(back.predict_slices(X), lstm.predict_slices(X))
    h = rng.uniform(1, 40, size=130)
    assert back.predict(h) == lstm.predict(h)


def test_train_is_deterministic_tiny():
    rng = np.random.default_rng(0)
    trace = rng.uniform(1, 20, size=86400 // 40)  # ~2160 s: tiny, seconds to train
    kw = dict(epochs=2, seed=0, step_s=20, train_days=(0, 1))
    a, b = P.train(trace, **kw), P.train(trace, **kw)
    X, _ = P.make_dataset(trace, step_s=100)
    np.testing.assert_array_equal(a.predict_slices(X), b.predict_slices(X))


def test_shipped_weights_load():
    assert P.DEFAULT_WEIGHTS.is_file(), "run `python -m planner.train_predictor`"
    assert P.DEFAULT_WEIGHTS.stat().st_size < 64 * 1024
    lstm = P.get_predictor("lstm")
    assert isinstance(lstm, P.LSTMPredictor)
    assert lstm.net.lstm.hidden_size == 25
    h = np.full(120, 10.0)
    assert math.isfinite(lstm.predict(h)) and lstm.predict(h) > 0


# ---------------------------------------------------------------- real trace


def test_missing_trace_message(tmp_path, monkeypatch):
    monkeypatch.setenv(T.ENV_VAR, str(tmp_path / "nope.txt.bz2"))
    with pytest.raises(FileNotFoundError, match="IPA_ENERGY_TRACE"):
        T.load_trace()


def test_unknown_window():
    with pytest.raises(KeyError):
        T.spans("nope")


@needs_trace
def test_windows_match_data_readme():
    trace = T.load_trace()
    assert len(trace) == 1_899_061
    b = T.window("bursty", trace)
    assert len(b) == 1200
    assert b.min() == pytest.approx(3.4, abs=0.051) and b.max() == pytest.approx(34.2, abs=0.051)
    assert b.mean() == pytest.approx(12.5, abs=0.05)
    lo = T.window("steady_low", trace)
    assert len(lo) == 1200 and lo.min() == pytest.approx(3.1, abs=0.051)
    assert lo.max() == pytest.approx(8.6, abs=0.051)
    hi = T.window("steady_high", trace)
    assert len(hi) == 600 and hi.mean() == pytest.approx(29.3, abs=0.05)
    assert len(T.window("steady_high", trace, repeat=2)) == 1200
    f = T.window("fluctuating", trace)
    assert len(f) == 1200 and f.max() == pytest.approx(34.2, abs=0.051)
    np.testing.assert_array_equal(f[:600], trace[1301400:1302000])


@needs_trace
def test_shipped_weights_on_real_window():
    lstm = P.get_predictor("lstm")
    b = T.window("bursty")
    preds = [lstm.predict(b[: i + 120]) for i in range(0, 1080, 60)]
    assert all(math.isfinite(p) and p > 0 for p in preds)
    # a sane forecast: within the range of the window (with slack)
    assert 1.0 < min(preds) and max(preds) < 80.0
