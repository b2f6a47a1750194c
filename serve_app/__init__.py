"""The Ray Serve application: `serve run serve_app:app [key=value ...]`.

Arguments (all optional): pipelines=video|all|video,llm,...  tier=mini  plan=plans.json
token=SECRET  max_body_bytes=N  max_image_pixels=N  max_prompt_chars=N  max_new_tokens=N.
Python users: :func:`serve_app.control.deploy`, :func:`serve_app.control.apply_plan`.
"""

# No `from __future__ import annotations` here: Ray Serve inspects the builder's signature.
from typing import Dict


def app(args: Dict[str, str]):
    """Application builder for `serve run` / `serve build` (imports stay lazy for light imports)."""
    import ray

    from serve_app.builder import build_app
    from serve_app.config import from_args
    from serve_app.control import node_environment
    from serve_app.controller import PlanController
    from serve_app.layout import layout
    from ipa_energy.messages import PlanState

    if not ray.is_initialized():  # `serve run` calls the builder before it starts a local Ray
        node_environment()
    spec, plans = from_args(args)
    return build_app(spec, layout(plans, spec.shape), PlanState(version=1, plans=plans), controller=PlanController)


def __getattr__(name: str):
    # `serve build serve_app:default_app` needs an Application, not a builder; build it only
    # when asked for, so that importing serve_app stays light.
    if name == "default_app":
        return app({})
    raise AttributeError(f"module 'serve_app' has no attribute {name!r}")
