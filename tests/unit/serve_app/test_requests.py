"""Request validation and decoding: 413 over limits, 422 for bad input, naming the field."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from ipa_energy.errors import PayloadError
from serve_app.requests import Limits, check_body_size, check_json_shape, parse_body, request_model
from tests.fuzz_bodies import hostile_bodies
from workloads import catalog, images, payloads

VIDEO = request_model(catalog.pipeline("video"))
LLM = request_model(catalog.pipeline("llm"))
LIMITS = Limits(max_body_bytes=200_000, max_image_pixels=100 * 100, max_prompt_chars=50, max_new_tokens=32)


def body(obj) -> bytes:
    return json.dumps(obj).encode()


def error(schema, raw, limits=LIMITS) -> PayloadError:
    with pytest.raises(PayloadError) as e:
        parse_body(schema, raw, limits)
    return e.value


def test_valid_image_is_checked_and_decoded_by_the_stage():
    payload = parse_body(VIDEO, body(payloads.image_request(64, 80)), LIMITS)
    assert isinstance(payload["image"], bytes)  # the ingress forwards the encoded bytes
    pixels = images.decode(payload["image"])
    assert pixels.shape == (64, 80, 3) and pixels.dtype == np.uint8
    jpeg = parse_body(VIDEO, body(payloads.image_request(32, 32, fmt="JPEG")), LIMITS)
    assert images.decode(jpeg["image"]).shape == (32, 32, 3)


def test_grey_image_becomes_rgb():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(buf, format="PNG")
    payload = parse_body(VIDEO, body({"image": base64.b64encode(buf.getvalue()).decode()}), LIMITS)
    assert images.decode(payload["image"]).shape == (20, 30, 3)


def test_corrupt_pixel_data_is_caught():
    raw = bytearray(base64.b64decode(payloads.image_request(32, 32)["image"]))
    raw[60:80] = b"\0" * 20  # break a chunk inside the PNG
    e = error(VIDEO, body({"image": base64.b64encode(bytes(raw)).decode()}))
    assert e.status_code == 422 and e.field == "image"


@pytest.mark.parametrize(
    "raw, field, text",
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (body({}), "image", "Field required"),
        (body({"image": 7}), "image", "valid string"),
        (body({"image": "%%%"}), "image", "not valid base64"),
        (body({"image": base64.b64encode(b"hello").decode()}), "image", "not a decodable PNG or JPEG"),
        (body({"image": "", "extra": 1}), "extra", "Extra inputs"),
    ],
)
def test_malformed_requests_are_422_naming_the_field(raw, field, text):
    e = error(VIDEO, raw)
    assert e.status_code == 422 and e.field == field and text in e.message


def test_gif_is_refused():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, format="GIF")
    e = error(VIDEO, body({"image": base64.b64encode(buf.getvalue()).decode()}))
    assert e.status_code == 422 and "GIF" in e.message


def test_oversized_inputs_are_413():
    assert error(VIDEO, body(payloads.image_request(101, 100))).status_code == 413
    assert error(VIDEO, b" " * 200_001).status_code == 413
    e = error(LLM, body({"prompt": "x" * 51, "max_new_tokens": 4}))
    assert e.status_code == 413 and e.field == "prompt"
    with pytest.raises(PayloadError) as too_big:
        check_body_size("200001", LIMITS)
    assert too_big.value.status_code == 413
    check_body_size("200000", LIMITS)
    check_body_size(None, LIMITS)


def test_prompt_fields():
    payload = parse_body(LLM, body({"prompt": "hello"}), LIMITS)
    assert payload == {"prompt": "hello", "max_new_tokens": 16}
    assert error(LLM, body({"prompt": "hi", "max_new_tokens": 33})).status_code == 422
    assert error(LLM, body({"prompt": "hi", "max_new_tokens": 0})).field == "max_new_tokens"
    assert error(LLM, body({"prompt": "hi", "max_new_tokens": "5"})).field == "max_new_tokens"


def test_request_schema_is_per_pipeline():
    assert VIDEO.model_json_schema()["required"] == ["image"]
    assert LLM.model_json_schema()["required"] == ["prompt"]


def test_deep_nesting_is_422_before_the_decoder_recurses():
    for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
        deep = b'{"image": ' + opener * 100_000 + b"1" + closer * 100_000 + b"}"
        e = error(VIDEO, deep, Limits())  # json.loads alone raises RecursionError here
        assert e.status_code == 422 and "deeper than 32 levels" in e.message
    # at the limit it is only the schema that refuses it
    at_limit = b'{"image": ' + b"[" * 31 + b"]" * 31 + b"}"
    assert "image" in error(VIDEO, at_limit, Limits()).message


def test_too_many_values_is_413():
    many = json.dumps({"prompt": "hi", "x": [1] * 20_000}).encode()
    e = error(LLM, many, Limits())
    assert e.status_code == 413 and "more than 10000 JSON values" in e.message


def test_brackets_and_escaped_quotes_inside_strings_are_not_structure():
    tricky = "\\\"[[[[" * 2_000 + "{,,,,}" * 2_000  # escaped backslash, escaped quote, brackets: all text
    check_json_shape(json.dumps({"prompt": tricky, "max_new_tokens": 4}).encode(), Limits())
    assert error(LLM, json.dumps({"prompt": tricky}).encode(), Limits()).status_code == 413  # the prompt is long


def test_bracket_that_never_opened_is_422():
    assert error(VIDEO, b'{"image": "x"}]]]', Limits()).status_code == 422


@pytest.mark.parametrize("name", sorted(catalog.pipelines()))
def test_hostile_bodies_get_4xx_or_a_payload_never_another_error(name):
    pipeline = catalog.pipeline(name)
    schema, limits = request_model(pipeline), Limits()
    valid = payloads.request_for(pipeline.input_keys)
    statuses = set()
    for raw in hostile_bodies(valid, seed=sum(map(ord, name)), count=400):
        try:
            parse_body(schema, raw, limits)
            statuses.add(200)
        except PayloadError as e:
            assert 400 <= e.status_code < 500, (e.status_code, e.message, raw[:200])
            statuses.add(e.status_code)
    assert {413, 422} <= statuses  # the generator reaches both limits
    assert parse_body(schema, json.dumps(valid).encode(), limits)
