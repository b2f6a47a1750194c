"""Load generation: traces, Locust trace replay, and in-process drivers.

* ``traces`` — IPA's Twitter trace and windows, constant rates, per-second CSVs → arrival times;
* ``replay`` + ``locustfile`` — open-loop replay of a trace with Locust (run in its own process),
  every request recorded as an ``ipa_energy.records.RequestRow``; ``options`` — its flags;
* ``driver`` — closed-loop clients and open-loop Poisson arrivals (asyncio + httpx) for tests
  and benchmarks.
"""
