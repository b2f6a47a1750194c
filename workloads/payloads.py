"""Request payloads for tests, benchmarks, load generation and profiling (no files needed).

Images are deterministic synthetic uint8 HxWx3 arrays (:func:`synthetic_image`), base64-encoded
for HTTP bodies (:func:`image_request`); prompts are words drawn from :data:`WORDS`.
:func:`payload_for` makes the payload a variant's task reads, at the variant's input size.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ipa_energy.errors import SpecError

if TYPE_CHECKING:
    from ipa_energy.spec import VariantSpec

__all__ = [
    "DEFAULT_FRAME_PX", "WORDS", "Payload", "Runner", "encode_image", "image_request", "payload_for", "prompt",
    "prompt_request", "request_for", "synthetic_image", "warmup_payload",
]

#: one request's (or one stage's) payload: the keys its task reads and adds (ipa_energy.spec.TASK_IO)
Payload = dict[str, Any]
#: a task runner (workloads.tasks.build_runner): a batch of payloads in, one output per payload out
Runner = Callable[[list[Payload]], list[Payload]]
DEFAULT_FRAME_PX = 320  # video frames / detector input when the variant names no input size

WORDS = (
    "energy latency accuracy pipeline variant batch replica planner trace load model "
    "serve power joule watt request stage detector classifier segment generate"
).split()


def synthetic_image(height: int = DEFAULT_FRAME_PX, width: int = DEFAULT_FRAME_PX, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 HxWx3 image: a gradient with a few filled rectangles."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    image = image.astype(np.uint8)
    for _ in range(3):
        y0, x0 = rng.integers(0, max(height - 8, 1)), rng.integers(0, max(width - 8, 1))
        h, w = rng.integers(8, max(height // 2, 9)), rng.integers(8, max(width // 2, 9))
        image[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3, dtype=np.uint8)
    return image


def encode_image(image: np.ndarray, fmt: str = "PNG") -> str:
    """Base64 of the image encoded as PNG or JPEG, as the HTTP API expects."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def image_request(height: int = DEFAULT_FRAME_PX, width: int = DEFAULT_FRAME_PX, seed: int = 0, fmt: str = "PNG") -> dict:
    return {"image": encode_image(synthetic_image(height, width, seed), fmt)}


def prompt(n_words: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=n_words))


def prompt_request(n_words: int = 16, max_new_tokens: int = 8, seed: int = 0) -> dict:
    return {"prompt": prompt(n_words, seed), "max_new_tokens": max_new_tokens}


def request_for(input_keys: tuple[str, ...], seed: int = 0) -> dict:
    """A valid request body for a pipeline that reads `input_keys`."""
    body: dict = {}
    if "image" in input_keys:
        body |= image_request(seed=seed)
    if "prompt" in input_keys:
        body |= prompt_request(seed=seed)
    if "prompts" in input_keys:
        body |= {"prompts": {"points": [[160.0, 160.0, 1]], "boxes": [[40.0, 40.0, 200.0, 220.0]]}}
    return body


def warmup_payload(task: str) -> dict:
    """A small payload for `task`, run once when a replica starts so that it is warm when ready."""
    image = synthetic_image(64, 64, seed=0)
    return {
        "classify": {"image": image},
        "detect": {"image": image},
        "classify-crops": {"image": image, "detections": [{"box": [0.0, 0.0, 32.0, 32.0]}]},
        "generate": {"prompt": "warm up", "max_new_tokens": 2},
        "segment": {"image": image, "prompts": {"points": [[32.0, 32.0, 1]], "boxes": [[8.0, 8.0, 40.0, 40.0]]}},
        "segment-detections": {"image": image, "detections": [{"box": [8.0, 8.0, 40.0, 40.0]}]},
    }[task]


# --- a variant's payload, for profiling -------------------------------------------------------


def _input_size(variant: VariantSpec) -> int:
    # classify-crops: input_size is the crop size, not the frame's.
    if variant.task == "classify-crops":
        return DEFAULT_FRAME_PX
    args = variant.build_args  # torchvision classifiers: input_size; SAM: img_size
    return int(args.get("input_size", args.get("img_size", DEFAULT_FRAME_PX)))


def _detections(rng: np.random.Generator, size: int, n: int) -> list[dict]:
    dets = []
    for _ in range(n):
        w, h = rng.integers(size // 8, size // 2, 2)
        x1, y1 = rng.integers(0, size - w), rng.integers(0, size - h)
        dets.append({"box": [float(x1), float(y1), float(x1 + w), float(y1 + h)], "class_id": 0,
                     "label": "object", "score": 1.0})
    return dets


def payload_for(variant: VariantSpec, seed: int = 0, *, image_size: int | None = None,
                prompt_words: int = 32, max_new_tokens: int = 16, num_detections: int = 4) -> Payload:
    """A realistic request payload for `variant`'s task (deterministic in `seed`).

    Images are ``synthetic_image`` uint8 HxWx3 arrays at the variant's input resolution
    (``build_args["input_size"]``, SAM's ``img_size``), else 320 px; classify-crops gets a
    320 px frame (its input_size is the crop size). Tasks that read detections get
    `num_detections` boxes inside the image; "segment" gets one foreground point.
    Generation: a prompt of `prompt_words` words and `max_new_tokens`.
    """
    task = variant.task
    size = int(image_size) if image_size else _input_size(variant)
    rng = np.random.default_rng(seed)
    if task in ("classify", "detect"):
        return {"image": synthetic_image(size, size, seed)}
    if task in ("classify-crops", "segment-detections"):
        return {"image": synthetic_image(size, size, seed), "detections": _detections(rng, size, num_detections)}
    if task == "segment":
        x, y = (float(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
        return {"image": synthetic_image(size, size, seed), "prompts": {"points": [[x, y, 1]], "boxes": []}}
    if task == "generate":
        return {"prompt": prompt(prompt_words, seed), "max_new_tokens": int(max_new_tokens)}
    raise SpecError(f"no profiling payload for task {task!r} of variant {variant.name!r}; "
                    "known: classify, detect, classify-crops, generate, segment, segment-detections")
