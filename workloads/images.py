"""Image decoding for the stages (the ingress only checks headers, see serve_app.requests)."""

from __future__ import annotations

import io

import numpy as np

from ipa_energy.errors import PayloadError

__all__ = ["decode"]


def decode(image: bytes | np.ndarray) -> np.ndarray:
    """PNG/JPEG bytes (or an already decoded array) → uint8 HxWx3."""
    if isinstance(image, np.ndarray):
        return image
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image)) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise PayloadError(422, f"image: cannot be decoded ({e})", "image") from None
