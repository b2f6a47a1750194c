"""Train IPA's LSTM load predictor on days 0–14 of the Twitter trace, ship its weights,
and evaluate lstm / reactive / max on days 14–21.

    python -m planner.train_predictor [--epochs 30] [--step-s 10] [--seed 0]

Writes ``planner/data/lstm.pt`` and ``planner/data/lstm_eval.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import os
import time
from pathlib import Path

import torch

from planner import predictor as P
from ipa_energy.files import write_json
from loadgen.traces import DAMPING, DEFAULT_TRACE, ENV_VAR, load_trace

DATA_DIR = Path(__file__).resolve().parent / "data"


def _trace_fingerprint(path: Path) -> dict:
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    return {
        "file": path.name,
        "size_bytes": path.stat().st_size,
        "sha256_first_mib": hashlib.sha256(head).hexdigest(),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, default=None, help="trace file (default: shared)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--step-s", type=int, default=P.TRAIN_STRIDE_S)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DATA_DIR / "lstm.pt")
    ap.add_argument("--eval-out", type=Path, default=DATA_DIR / "lstm_eval.json")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    trace_path = Path(args.trace or os.environ.get(ENV_VAR) or DEFAULT_TRACE)
    trace = load_trace(trace_path, damping=DAMPING)

    t0 = time.perf_counter()
    lstm = P.train(trace, epochs=args.epochs, seed=args.seed, step_s=args.step_s,
                   verbose=not args.quiet)
    train_s = time.perf_counter() - t0
    lstm.save(args.out)
    lstm = P.LSTMPredictor.load(args.out)  # evaluate exactly what ships

    preds = {"lstm": lstm, "reactive": P.ReactivePredictor(), "max": P.MaxPredictor()}
    X, y = P.make_dataset(trace, step_s=P.EVAL_STRIDE_S, start_s=14 * P.SECONDS_PER_DAY,
                          end_s=21 * P.SECONDS_PER_DAY)
    mapes = P.evaluate(preds, trace, start_day=14, end_day=21, step_s=P.EVAL_STRIDE_S)

    print(f"\nMAPE of the next-20 s max, days 14-21 ({len(y)} samples, every "
          f"{P.EVAL_STRIDE_S} s; damping {DAMPING:g})")
    print(f"{'predictor':<10} {'MAPE %':>8}")
    for name, v in mapes.items():
        print(f"{name:<10} {v:8.2f}")
    print(f"training: {train_s:.0f} s, weights {args.out} ({args.out.stat().st_size} B)")

    result = {
        "mape_percent": {k: round(v, 3) for k, v in mapes.items()},
        "eval": {"start_day": 14, "end_day": 21, "step_s": P.EVAL_STRIDE_S,
                 "n_samples": int(len(y)), "skipped": "samples touching zero (missing) seconds"},
        "training": {**lstm.meta, "train_seconds_wall": round(train_s, 1),
                     "optimizer": "adam", "loss": "mse (normalised by scale) + L1 on W_ih",
                     "scale": lstm.scale, "hidden": P.HIDDEN, "n_slices": P.N_SLICES,
                     "slice_s": P.SLICE_S, "horizon_s": P.HORIZON_S,
                     "torch": torch.__version__, "threads": torch.get_num_threads()},
        "trace": {**_trace_fingerprint(trace_path), "damping": DAMPING, "n_seconds": len(trace)},
        "weights": {"path": args.out.name, "size_bytes": args.out.stat().st_size},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "reference": "reconfigurable-ml-pipeline/ipa prediction-modules/lstm-module/train.py",
    }
    args.eval_out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.eval_out, result)
    return result


if __name__ == "__main__":
    main()
