"""Load generation: in-process drivers (``loadgen.driver``) and, later, Locust trace replay."""
