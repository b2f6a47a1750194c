"""Planning: profiles → integer program → Plan; load prediction; the adaptation loop and its actor.

* ``optimizer`` — IPA's integer program with energy (:func:`planner.optimizer.optimize`);
  ``terms`` (options and objective terms), ``solver`` (HiGHS / CBC bridge), ``checks``
  (constraints recomputed, plan evaluation), ``infadapter`` (InfAdapter's variant mix);
* ``policies`` — the one policy registry; ``baselines`` — opening plans of the outside baselines;
* ``profiles`` — which profiles a plan is made from; ``problem`` — a problem as JSON;
  ``tables`` — plans as text; ``benchmark`` — decision time;
* ``predictor`` — IPA's LSTM and the reactive / max baselines (trained by ``train_predictor``
  on :func:`loadgen.traces.load_trace`);
* ``loop`` — observe → predict → solve → apply, with the decision log; ``actor`` — the loop
  as a detached Ray actor against a running app.
"""
