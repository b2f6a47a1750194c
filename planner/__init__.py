"""Planning: profiles → integer program → Plan; load prediction; the planner actor.

Modules: ``optimizer`` (IPA's integer program with energy, PuLP; policies ipa, ipa-energy,
fa2-low/high, rim, static; decision-time benchmark), ``predictor`` (IPA's LSTM and the
reactive / max baselines), ``trace`` (the Twitter trace and IPA's windows), ``diff`` (plan
changes, used by serve_app and the fewest-changes tie-break).
"""
