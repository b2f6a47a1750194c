"""Request payloads for tests, benchmarks and load generation (no files needed)."""

from __future__ import annotations

import base64
import io

import numpy as np

WORDS = (
    "energy latency accuracy pipeline variant batch replica planner trace load model "
    "serve power joule watt request stage detector classifier segment generate"
).split()


def synthetic_image(height: int = 320, width: int = 320, seed: int = 0) -> np.ndarray:
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


def image_request(height: int = 320, width: int = 320, seed: int = 0, fmt: str = "PNG") -> dict:
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
