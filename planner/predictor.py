"""IPA's load predictor (LSTM) and its ``reactive`` / ``max`` baselines.

What was checked in IPA's code (github.com/reconfigurable-ml-pipeline/ipa, commit 597dc47):

* ``prediction-modules/lstm-module/train.py``:
  - features: ``get_x_y`` walks the trace with a stride of 10 s; x = the maxima of the 12
    consecutive 10 s slices of the last 120 s, y = ``max(data[i+120 : i+140])`` (the max of
    the next 20 s);
  - model: ``Input((12, 1))`` → ``LSTM(25, activation="relu",
    kernel_regularizer=L1(1e-5))`` → ``Dense(1)``;
  - data: damping factor 8, zero seconds filtered out (``filter(lambda x: x != 0, ...)``),
    first 14 days train, next 7 days test;
  - NO normalisation (raw RPS fed as int32 tensors); ``optimizer="adam"``, ``loss="mse"``,
    ``epochs=30``, ``batch_size=64``, ``tf.random.set_seed(7)``.
* ``prediction-modules/evaluation.py``: reports sklearn's MAPE (and SMAPE) of the LSTM
  (and an ARIMA(1,0,0) baseline) on the same (x, y) construction.
* ``optimizer/adapter.py`` class ``Predictor``: aggregates the monitored per-second series
  into 10 s slice maxima; ``"reactive": lambda l: l[-1]`` (the last 10 s slice max),
  ``"max": lambda l: max(l)`` (max over the monitored window); the backup predictor
  (``backup_predictor_type="max"``, ``backup_predictor_duration=2`` minutes in
  ``Adapter``) is used until 12 slices (2 min) exist; the result is then multiplied by
  ``1 + predictor_margin/100`` and rounded (the margin is left to the caller here).

Deviations (PyTorch port, CPU budget):

* ``torch.nn.LSTM`` has no ``activation="relu"``: it uses tanh, so inputs and targets are
  divided by one constant ``scale`` (mean training target) saved with the weights.
* L1(1e-5) is applied to the input-to-hidden weights (Keras' ``kernel``), as in IPA.
* Training windows use a stride of ``TRAIN_STRIDE_S`` = 30 s instead of IPA's 10 s: a third
  of the samples (~39k after gap removal), so IPA's 30 epochs take ~1.5 min of one core
  instead of ~4.5 min (``train(step_s=10)`` / ``--step-s 10`` restores IPA's set).
  Consecutive 10 s-stride windows share 11 of their 12 inputs, so little is lost.
* Missing data: instead of deleting zero seconds (which splices distant seconds together
  and shifts IPA's day boundaries by ~0.4 day), samples whose 140 s span contains a zero
  second are dropped, and day indices stay calendar seconds of the file.
* Slices are aligned to the most recent second (IPA's adapter aligns them to the start of
  the monitored series, so its last slice may be partial).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Protocol, Union

import numpy as np
import torch
from torch import nn

from planner.constants import HISTORY_S

__all__ = [
    "DEFAULT_WEIGHTS", "EVAL_STRIDE_S", "HIDDEN", "HISTORY_S", "HORIZON_S", "L1_KERNEL", "LSTMPredictor",
    "MaxPredictor", "N_SLICES", "Predictor", "ReactivePredictor", "SECONDS_PER_DAY", "SLICE_S", "TRAIN_STRIDE_S",
    "evaluate", "get_predictor", "make_dataset", "mape", "slice_maxima", "train",
]

SLICE_S = 10
N_SLICES = HISTORY_S // SLICE_S  # 12
HORIZON_S = 20
HIDDEN = 25
SECONDS_PER_DAY = 86400
TRAIN_STRIDE_S = 30
EVAL_STRIDE_S = 10
L1_KERNEL = 1e-5

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "data" / "lstm.pt"


# ---------------------------------------------------------------- features / dataset


def slice_maxima(history_rps: np.ndarray, n_slices: int = N_SLICES) -> np.ndarray:
    """Maxima of the last ``n_slices`` full 10 s slices, aligned to the newest second.

    Returns fewer slices when less history exists (a leading partial slice is dropped).
    """
    h = np.asarray(history_rps, dtype=np.float64).ravel()
    k = min(n_slices, len(h) // SLICE_S)
    if k == 0:
        return np.empty(0)
    tail = h[len(h) - k * SLICE_S :]
    return tail.reshape(k, SLICE_S).max(axis=1)


def make_dataset(
    trace: np.ndarray,
    step_s: int = EVAL_STRIDE_S,
    start_s: int = 0,
    end_s: int | None = None,
    drop_gaps: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) samples from ``trace[start_s:end_s]`` as in IPA's ``get_x_y``.

    A sample starting at second i has X = the maxima of the 12 slices ``trace[i+10k :
    i+10k+10]`` (k = 0..11, i.e. the last 120 s before i+120) and y = ``max(trace[i+120 :
    i+140])``. Starts advance by ``step_s``; only samples whose 140 s span lies inside the
    range are made. ``drop_gaps`` drops samples whose span holds a zero second (missing data
    in the Twitter archive). X: float32 (n, 12); y: float32 (n,).
    """
    t = np.asarray(trace, dtype=np.float64).ravel()
    end_s = len(t) if end_s is None else min(end_s, len(t))
    seg = t[start_s:end_s]
    span = HISTORY_S + HORIZON_S
    if len(seg) < span:
        return np.empty((0, N_SLICES), np.float32), np.empty(0, np.float32)
    swv = np.lib.stride_tricks.sliding_window_view
    m10 = swv(seg, SLICE_S).max(axis=1)  # m10[j] = max(seg[j:j+10])
    m20 = swv(seg, HORIZON_S).max(axis=1)  # m20[j] = max(seg[j:j+20])
    starts = np.arange(0, len(seg) - span + 1, step_s)
    X = m10[starts[:, None] + SLICE_S * np.arange(N_SLICES)[None, :]]
    y = m20[starts + HISTORY_S]
    if drop_gaps:
        zero_cum = np.concatenate([[0], np.cumsum(seg == 0)])
        ok = (zero_cum[starts + span] - zero_cum[starts]) == 0
        X, y = X[ok], y[ok]
    return X.astype(np.float32), y.astype(np.float32)


# ---------------------------------------------------------------- predictors


class Predictor(Protocol):
    name: str

    def predict(self, history_rps: np.ndarray) -> float: ...

    def predict_slices(self, X: np.ndarray) -> np.ndarray: ...


class MaxPredictor:
    """Max of the available history, up to the last 120 s (IPA's ``max``/backup)."""

    name = "max"

    def predict(self, history_rps: np.ndarray) -> float:
        h = np.asarray(history_rps, dtype=np.float64).ravel()[-HISTORY_S:]
        return float(h.max()) if len(h) else 0.0

    def predict_slices(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64).max(axis=1)


class ReactivePredictor:
    """Max of the last 10 s (IPA's ``reactive``: the last 10 s slice max, ``l[-1]``).

    With less than 10 s of history, the max of what exists.
    """

    name = "reactive"

    def predict(self, history_rps: np.ndarray) -> float:
        h = np.asarray(history_rps, dtype=np.float64).ravel()[-SLICE_S:]
        return float(h.max()) if len(h) else 0.0

    def predict_slices(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64)[:, -1].copy()


class _LSTMNet(nn.Module):
    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        self.lstm = nn.LSTM(input_size=1, hidden_size=hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, 12) normalised
        out, _ = self.lstm(x.unsqueeze(-1))
        return self.head(out[:, -1, :]).squeeze(-1)


class LSTMPredictor:
    """IPA's LSTM: 12 slice maxima (last 120 s) → max load of the next 20 s.

    Falls back to ``MaxPredictor`` until 120 s of history exist. No safety margin applied.
    """

    name = "lstm"

    def __init__(self, net: _LSTMNet | None = None, scale: float = 1.0, meta: dict | None = None):
        self.net = (net or _LSTMNet()).eval()
        self.scale = float(scale)
        self.meta = dict(meta or {})
        self.fallback = MaxPredictor()

    def predict_slices(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32).reshape(-1, N_SLICES)
        with torch.no_grad():
            out = self.net(torch.from_numpy(X / np.float32(self.scale)))
        return out.numpy().astype(np.float64) * self.scale

    def predict(self, history_rps: np.ndarray) -> float:
        h = np.asarray(history_rps, dtype=np.float64).ravel()
        if len(h) < HISTORY_S:
            return self.fallback.predict(h)
        return float(self.predict_slices(slice_maxima(h)[None, :])[0])

    # ---- persistence: a small state dict + normalisation constants (weights_only loadable)
    def state(self) -> dict:
        return {
            "format": "ipa-energy-lstm/1",
            "state_dict": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "scale": self.scale,
            "hidden": int(self.net.lstm.hidden_size),
            "n_slices": N_SLICES,
            "slice_s": SLICE_S,
            "horizon_s": HORIZON_S,
            "meta": {k: v for k, v in self.meta.items() if isinstance(v, (int, float, str))},
        }

    def save(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state(), path)
        return path

    @classmethod
    def load(cls, path: Union[str, Path] = DEFAULT_WEIGHTS) -> "LSTMPredictor":
        st = torch.load(Path(path), map_location="cpu", weights_only=True)
        if st.get("n_slices") != N_SLICES or st.get("slice_s") != SLICE_S:
            raise ValueError(f"{path}: incompatible LSTM weights ({st.get('format')})")
        net = _LSTMNet(hidden=int(st["hidden"]))
        net.load_state_dict(st["state_dict"])
        return cls(net, scale=float(st["scale"]), meta=st.get("meta", {}))


def get_predictor(name: str, weights: Union[str, Path] = DEFAULT_WEIGHTS) -> Predictor:
    """``"lstm"`` (shipped weights), ``"reactive"`` or ``"max"``."""
    if name == "lstm":
        return LSTMPredictor.load(weights)
    if name == "reactive":
        return ReactivePredictor()
    if name == "max":
        return MaxPredictor()
    raise ValueError(f"unknown predictor {name!r}; expected lstm, reactive or max")


# ---------------------------------------------------------------- training / evaluation


def train(
    trace: np.ndarray,
    epochs: int = 30,
    seed: int = 0,
    step_s: int = TRAIN_STRIDE_S,
    train_days: tuple[float, float] = (0, 14),
    batch_size: int = 64,
    lr: float = 1e-3,
    l1: float = L1_KERNEL,
    verbose: bool = False,
) -> LSTMPredictor:
    """Train IPA's LSTM on ``train_days`` of ``trace`` (deterministic for a given seed).

    Adam(lr=1e-3, Keras' default) on MSE of normalised targets + L1 on the input kernel,
    batch 64, samples every ``step_s`` seconds, shuffled each epoch with a seeded generator.
    """
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    X, y = make_dataset(
        trace,
        step_s=step_s,
        start_s=int(train_days[0] * SECONDS_PER_DAY),
        end_s=int(train_days[1] * SECONDS_PER_DAY),
    )
    if len(y) == 0:
        raise ValueError("no training samples in the given range")
    scale = float(y.mean()) or 1.0
    Xt = torch.from_numpy(X / np.float32(scale))
    yt = torch.from_numpy(y / np.float32(scale))
    net = _LSTMNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.MSELoss()
    t0 = time.perf_counter()
    n = len(yt)
    last = float("nan")
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for b in range(0, n, batch_size):
            idx = perm[b : b + batch_size]
            opt.zero_grad()
            loss = loss_fn(net(Xt[idx]), yt[idx])
            if l1:
                loss = loss + l1 * net.lstm.weight_ih_l0.abs().sum()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        last = total / n
        if verbose:
            print(f"epoch {ep + 1}/{epochs}: loss {last:.5f} ({time.perf_counter() - t0:.0f} s)")
    net.eval()
    meta = {
        "epochs": epochs,
        "seed": seed,
        "step_s": step_s,
        "batch_size": batch_size,
        "lr": lr,
        "l1_kernel": l1,
        "train_start_day": float(train_days[0]),
        "train_end_day": float(train_days[1]),
        "n_train": int(n),
        "final_train_loss": last,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    return LSTMPredictor(net, scale=scale, meta=meta)


def mape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute percentage error in percent, over non-zero targets."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    keep = y_true != 0
    return float(np.mean(np.abs(y_pred[keep] - y_true[keep]) / np.abs(y_true[keep])) * 100.0)


def evaluate(
    predictors: Union[Mapping[str, Predictor], list],
    trace: np.ndarray,
    start_day: float = 14,
    end_day: float = 21,
    step_s: int = EVAL_STRIDE_S,
) -> dict[str, float]:
    """MAPE (percent) of each predictor's next-20 s max on ``[start_day, end_day)``.

    Samples every ``step_s`` s (IPA's 10 s stride) with 120 s of history each (so the LSTM
    never falls back); samples touching missing (zero) seconds and zero targets are skipped.
    """
    if not isinstance(predictors, Mapping):
        predictors = {p.name: p for p in predictors}
    X, y = make_dataset(
        trace,
        step_s=step_s,
        start_s=int(start_day * SECONDS_PER_DAY),
        end_s=int(end_day * SECONDS_PER_DAY),
    )
    return {name: mape(y, p.predict_slices(X)) for name, p in predictors.items()}
