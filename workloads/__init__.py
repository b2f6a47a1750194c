"""Model variants as workloads: what a stage can run, how it runs, and what it costs.

* :mod:`workloads.catalog` — the variant catalog: pipelines of real architectures with published
  accuracy, in two tiers (``full``; ``mini`` CPU stand-ins);
* :mod:`workloads.models` — builders of torchvision and transformers architectures (random
  weights unless a checkpoint is given);
* :mod:`workloads.sam_models` — Segment Anything: the published backbones, their mini stand-ins,
  the builder and the published accuracy;
* :mod:`workloads.tasks` — task runners (classify, detect, classify-crops; dispatch to
  :mod:`workloads.text` for generate and :mod:`workloads.sam` for segment, segment-detections);
* :mod:`workloads.text` — text generation with a causal LM and the byte-level tokenizer;
* :mod:`workloads.sam` — SAM's payloads, prompt validation, RLE masks and runners;
* :mod:`workloads.images` — image decoding for the stages;
* :mod:`workloads.payloads` — request payloads for tests, load generation and profiling;
* :mod:`workloads.profiler` — the offline profiler (latency, throughput, energy per batch size),
  measuring with :mod:`workloads.steady_state` (the steady window and its energy arithmetic);
* :mod:`workloads.profile_store` — profiles at rest: hardware ids, the JSON store, IPA's latency
  fit, the table; the shipped profiles are in ``workloads/profiles/``.

Importing the package imports none of them (torch is heavy); import the module you need.
"""

__all__: list[str] = []
