"""Planning: profiles → integer program → Plan; load prediction; the planner actor.

So far: plan diffing (``planner.diff``), used by serve_app to apply plans with the fewest
changes and by the planner's tie-break.
"""
