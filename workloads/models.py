"""Build a variant's real architecture, with its checkpoint when one is given.

Builder ids: ``torchvision:<model name>`` (classifiers and detectors from torchvision's
registry) and ``transformers:<config class>`` (causal LMs built from a config). Without a
checkpoint the weights are random, and every output says so (``VariantSpec.weights``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import torch

from ipa_energy.errors import SpecError
from ipa_energy.spec import VariantSpec

__all__ = [
    "RUNTIME_ARGS", "build_causal_lm", "build_torchvision", "categories", "device_for", "load_state_dict",
    "model_kwargs", "place",
]

# build_args keys that steer pre-processing rather than the model constructor.
RUNTIME_ARGS = ("input_size", "top_k")


def model_kwargs(variant: VariantSpec) -> dict[str, Any]:
    return {k: v for k, v in variant.build_args.items() if k not in RUNTIME_ARGS}


def device_for(variant: VariantSpec) -> torch.device:
    """The GPU Ray gave this replica when the variant asks for one (and CUDA is there), else CPU."""
    if variant.resources.num_gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def place(model: torch.nn.Module, variant: VariantSpec) -> torch.nn.Module:
    """Eval mode, on the variant's device (models are built on the CPU, or on `meta` in tests)."""
    device = device_for(variant)
    return model.eval() if device.type == "cpu" else model.eval().to(device)


def build_torchvision(variant: VariantSpec) -> torch.nn.Module:
    import torchvision

    kind, _, name = variant.architecture.partition(":")
    if kind != "torchvision" or name not in torchvision.models.list_models():
        raise SpecError(f"variant {variant.name!r}: unknown torchvision architecture {variant.architecture!r}")
    kwargs = dict(weights=None, **model_kwargs(variant))
    if variant.task == "detect":
        kwargs.setdefault("weights_backbone", None)
    model = torchvision.models.get_model(name, **kwargs)
    if variant.checkpoint is not None:
        model.load_state_dict(load_state_dict(variant.checkpoint))
    return place(model, variant)


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Load a local checkpoint safely (tensors only, no pickled code)."""
    if not os.path.isfile(path):
        raise SpecError(f"checkpoint {path!r} is not a file (torchvision variants load local files only)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


@lru_cache(maxsize=None)
def categories(architecture: str) -> tuple[str, ...]:
    """Class names of a torchvision architecture's published weights (bundled, no download)."""
    import torchvision

    name = architecture.partition(":")[2]
    try:
        weights_enum = torchvision.models.get_model_weights(name)
    except (KeyError, ValueError):
        return ()
    first = next(iter(weights_enum))
    return tuple(first.meta.get("categories", ()))


def build_causal_lm(variant: VariantSpec) -> torch.nn.Module:
    """A causal LM: `from_pretrained` for a checkpoint, else the config's architecture, random."""
    import transformers

    if variant.checkpoint is not None:
        return place(transformers.AutoModelForCausalLM.from_pretrained(variant.checkpoint), variant)
    kind, _, config_cls = variant.architecture.partition(":")
    cls = getattr(transformers, config_cls, None)
    if kind != "transformers" or cls is None:
        raise SpecError(f"variant {variant.name!r}: unknown transformers config {variant.architecture!r}")
    config = cls(**model_kwargs(variant))
    return place(transformers.AutoModelForCausalLM.from_config(config), variant)
