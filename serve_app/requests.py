"""Request bodies: per-pipeline schemas, size limits and decoding into stage payloads.

Errors are :class:`PayloadError` with the HTTP status to answer: 413 for anything over a
configured limit, 422 for malformed JSON, wrong types or missing fields (naming the field).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import struct
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from ipa_energy.errors import PayloadError
from ipa_energy.spec import PipelineSpec

__all__ = [
    "Limits", "Prompts", "check_body_size", "check_image", "check_json_shape", "load_json", "parse_body", "request_model",
]


class Limits(BaseModel):
    """Largest requests the service accepts; larger ones get HTTP 413."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Request body size limit (bytes).")
    max_image_pixels: int = Field(2048 * 2048, ge=1, description="Limit on width × height of an image.")
    max_prompt_chars: int = Field(4096, ge=1, description="Limit on prompt length (characters).")
    max_new_tokens: int = Field(256, ge=1, description="Largest max_new_tokens a request may ask for.")
    max_json_depth: int = Field(32, ge=4, le=512, description="Deepest nesting of JSON arrays and objects in a body "
                                "(deeper → 422, checked before decoding).")
    max_json_values: int = Field(10_000, ge=64, description="Most JSON values (strings, arrays, objects, and "
                                 "elements counted by their commas) in a body (more → 413, checked before decoding).")


class Prompts(BaseModel):
    """Segment Anything prompts, in the image's pixel coordinates."""

    model_config = ConfigDict(extra="forbid")

    points: list[tuple[float, float, int]] = Field(
        default_factory=list, max_length=64, description="[x, y, label] with label 1 = foreground, 0 = background."
    )
    boxes: list[tuple[float, float, float, float]] = Field(default_factory=list, max_length=64, description="[x1, y1, x2, y2].")

    @model_validator(mode="after")
    def _some_prompt(self) -> "Prompts":
        if not self.points and not self.boxes:
            raise ValueError("give at least one point or box")
        if any(label not in (0, 1) for *_, label in self.points):
            raise ValueError("point labels are 1 (foreground) or 0 (background)")
        if any(x2 < x1 or y2 < y1 for x1, y1, x2, y2 in self.boxes):
            raise ValueError("boxes are [x1, y1, x2, y2] with x2 ≥ x1 and y2 ≥ y1")
        return self


# Every field a request may carry; a pipeline's schema requires the ones it reads.
_FIELDS: dict[str, tuple[Any, str]] = {
    "image": (str, "Base64-encoded PNG or JPEG image."),
    "prompt": (str, "Text prompt (not empty)."),
    "max_new_tokens": (int, "Tokens to generate."),
    "prompts": (Prompts, "Point and/or box prompts for segmentation."),
}


def request_model(pipeline: PipelineSpec) -> type[BaseModel]:
    """The pydantic model of `pipeline`'s request body (also its OpenAPI schema)."""
    fields: dict[str, Any] = {}
    for key in pipeline.input_keys:
        typ, doc = _FIELDS[key]
        if key == "max_new_tokens":
            fields[key] = (typ, Field(16, ge=1, description=doc))
        elif key == "prompt":
            fields[key] = (typ, Field(min_length=1, description=doc))
        else:
            fields[key] = (typ, Field(description=doc))
    model_name = "".join(p.capitalize() for p in pipeline.name.replace("-", "_").split("_")) + "Request"
    return create_model(model_name, __config__=ConfigDict(extra="forbid", strict=True), **fields)


def check_body_size(content_length: str | None, limits: Limits) -> None:
    if content_length is None:
        return
    try:
        size = int(content_length)
    except ValueError:
        raise PayloadError(400, "Content-Length header is not an integer") from None
    if size > limits.max_body_bytes:
        raise PayloadError(413, f"body of {size} bytes exceeds the limit of {limits.max_body_bytes} bytes")


# Outside strings: a bracket, a comma or the quote that opens a string.
_STRUCTURE = re.compile(rb'[\[\]{},"]')
# A whole JSON string, escapes included (for strings that hold a backslash).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def check_json_shape(body: bytes, limits: Limits) -> None:
    """Refuse a body that nests too deep or holds too many values, before a decoder sees it.

    Python's JSON decoder recurses once per level (a deep body raises RecursionError) and
    builds every value it reads; this scan does neither. Every step counts toward a limit
    or ends the scan, so it stops within the limits' worth of tokens whatever the body, and
    it skips a string's content at memchr speed (a base64 image is one string). What is not
    JSON at all is left to the decoder, which reports it.
    """
    depth = values = pos = 0
    while (match := _STRUCTURE.search(body, pos)) is not None:
        i = match.start()
        token = body[i]
        pos = i + 1
        if token == 0x22:  # '"': skip the string
            end = body.find(b'"', pos)
            if end >= 0 and body.find(b"\\", pos, end) >= 0:  # an escape: maybe an escaped quote
                string = _STRING.match(body, i)
                end = string.end() - 1 if string else -1
            if end < 0:
                return  # an unterminated string: not JSON (the decoder says so)
            pos = end + 1
        elif token in b"]}":
            depth -= 1
            if depth < 0:
                raise PayloadError(422, "body is not valid JSON: a bracket closes that never opened")
            continue
        elif token in b"[{":
            depth += 1
            if depth > limits.max_json_depth:
                raise PayloadError(422, f"body nests arrays or objects deeper than {limits.max_json_depth} levels")
        values += 1
        if values > limits.max_json_values:
            raise PayloadError(413, f"body holds more than {limits.max_json_values} JSON values")


def load_json(body: bytes, limits: Limits) -> Any:
    """`body` decoded as JSON once its shape is within `limits` (check_json_shape); 422 if it is not JSON."""
    check_json_shape(body, limits)
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PayloadError(422, f"body is not valid JSON: {e}") from None


def parse_body(schema: type[BaseModel], body: bytes, limits: Limits) -> dict[str, Any]:
    """Validate `body` against a pipeline's `schema` (see request_model) and decode it into a payload."""
    if len(body) > limits.max_body_bytes:
        raise PayloadError(413, f"body of {len(body)} bytes exceeds the limit of {limits.max_body_bytes} bytes")
    raw = load_json(body, limits)
    if not isinstance(raw, dict):
        raise PayloadError(422, f"body must be a JSON object, got {type(raw).__name__}")
    try:
        request = schema.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise PayloadError(422, f"{field}: {err['msg']}" if field else err["msg"], field) from None
    payload: dict[str, Any] = {}
    for key, value in request.model_dump().items():
        if key == "image":
            payload[key] = check_image(value, limits)
        elif key == "prompt":
            if len(value) > limits.max_prompt_chars:
                raise PayloadError(413, f"prompt of {len(value)} characters exceeds the limit of {limits.max_prompt_chars}", key)
            payload[key] = value
        elif key == "prompts":
            payload[key] = value  # already a plain dict after model_dump
        elif key == "max_new_tokens":
            if value > limits.max_new_tokens:
                raise PayloadError(422, f"max_new_tokens: at most {limits.max_new_tokens}", key)
            payload[key] = value
    return payload


def check_image(data: str, limits: Limits) -> bytes:
    """Base64 PNG/JPEG → its bytes, after checking size and integrity from the headers.

    Pixels are decoded by the stages that read them (workloads.images): encoded bytes are
    several times smaller than pixels to pass between Ray processes.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(422, "image: not valid base64", "image") from None
    try:
        with Image.open(io.BytesIO(raw)) as im:  # reads the header only
            width, height = im.size
            if width * height > limits.max_image_pixels:
                raise PayloadError(
                    413, f"image of {width}x{height} pixels exceeds the limit of {limits.max_image_pixels} pixels", "image"
                )
            if im.format not in ("PNG", "JPEG"):
                raise PayloadError(422, f"image: format {im.format} is not PNG or JPEG", "image")
            im.verify()  # structure and checksums, without decoding pixels
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError):
        raise PayloadError(422, "image: not a decodable PNG or JPEG", "image") from None
    return raw
