"""A request-level discrete-event simulator that runs the real planner (issue 13; docs/simulator.md).

`ipa-energy simulate` (sim.run) replays a trace against a simulated cluster (sim.cluster)
served by a model of the app (sim.engine), with the real PlannerLoop, optimizer and
predictor on the simulated clock, and writes the experiments' result schema.
"""
