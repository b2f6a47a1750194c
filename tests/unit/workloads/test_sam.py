"""SAM runners: RLE round-trips, mini variants segment real payloads, malformed prompts are 422."""

import io
import time

import numpy as np
import pytest
import torch

from ipa_energy.errors import PayloadError
from workloads import payloads, sam, sam_models

MINI = {v.name: v for v in sam_models.sam_variants("mini")}
MINI_DET = {v.name: v for v in sam_models.sam_variants("mini", task="segment-detections")}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def segmenters():
    return {name: sam.build_runner(v) for name, v in MINI.items()}


def _check_masks(masks: list[dict], shape: tuple[int, int], n: int) -> None:
    assert len(masks) == n
    for m in masks:
        assert set(m) == {"rle", "score", "box", "area"}
        assert m["rle"]["size"] == list(shape)
        decoded = sam.rle_decode(m["rle"])
        assert decoded.shape == shape
        assert m["area"] == int(decoded.sum())
        assert isinstance(m["score"], float)
        if m["area"] == 0:
            assert m["box"] is None
        else:
            ys, xs = np.nonzero(decoded)
            assert m["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


# --- RLE -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((5, 7), bool),
        np.ones((5, 7), bool),
        np.eye(6, 4, dtype=bool),
        np.random.default_rng(0).random((31, 17)) > 0.5,
        np.zeros((1, 1), bool),
        np.ones((1, 1), bool),
    ],
    ids=["empty", "full", "eye", "random", "1px-off", "1px-on"],
)
def test_rle_round_trip(mask):
    rle = sam.rle_encode(mask)
    assert rle["size"] == list(mask.shape)
    assert sum(rle["counts"]) == mask.size
    np.testing.assert_array_equal(sam.rle_decode(rle), mask)


def test_rle_is_coco_column_major_starting_with_zeros():
    mask = np.array([[0, 1], [1, 1]], dtype=bool)  # column-major: 0, 1, 1, 1
    assert sam.rle_encode(mask) == {"size": [2, 2], "counts": [1, 3]}
    assert sam.rle_encode(np.ones((2, 3), bool))["counts"] == [0, 6]
    assert sam.rle_encode(np.zeros((2, 3), bool))["counts"] == [6]
    with pytest.raises(ValueError):
        sam.rle_decode({"size": [2, 2], "counts": [1, 2]})


# --- runners -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MINI))
def test_mini_segments_point_and_box_prompts(segmenters, name):
    image = payloads.synthetic_image(120, 200, seed=1)
    out = segmenters[name]([
        {"image": image, "prompts": {"points": [[50, 60, 1]]}},
        {"image": image, "prompts": {"boxes": [[10, 20, 110, 90], [0, 0, 200, 120]]}},
        {"image": image, "prompts": {"points": [[50, 60, 1], [150, 30, 0]], "boxes": [[10, 20, 110, 90]]}},
    ])
    assert len(out) == 3
    _check_masks(out[0]["masks"], (120, 200), 1)
    _check_masks(out[1]["masks"], (120, 200), 2)
    _check_masks(out[2]["masks"], (120, 200), 2)  # one for the box, one for the point set


@pytest.mark.parametrize("name", list(MINI))
def test_mini_batches_images_of_different_sizes(segmenters, name):
    a, b = payloads.synthetic_image(64, 96, seed=2), payloads.synthetic_image(300, 140, seed=3)
    png = io.BytesIO()
    from PIL import Image

    Image.fromarray(b).save(png, format="PNG")
    out = segmenters[name]([
        {"image": a, "prompts": {"boxes": [[5, 5, 60, 40]]}},
        {"image": png.getvalue(), "prompts": {"points": [[70, 150, 1]]}},
    ])
    _check_masks(out[0]["masks"], (64, 96), 1)
    _check_masks(out[1]["masks"], (300, 140), 1)


def test_batched_result_equals_one_at_a_time(segmenters):
    runner = segmenters["sam-vit-b-mini"]
    p1 = {"image": payloads.synthetic_image(80, 100, seed=4), "prompts": {"boxes": [[10, 10, 70, 60]]}}
    p2 = {"image": payloads.synthetic_image(150, 90, seed=5), "prompts": {"points": [[40, 70, 1]]}}
    together = runner([p1, p2])
    alone = runner([p1]) + runner([p2])
    for t, s in zip(together, alone):
        np.testing.assert_array_equal(sam.rle_decode(t["masks"][0]["rle"]), sam.rle_decode(s["masks"][0]["rle"]))
        assert t["masks"][0]["score"] == pytest.approx(s["masks"][0]["score"], abs=1e-4)


def test_prompts_outside_the_image_are_clamped(segmenters):
    image = payloads.synthetic_image(50, 60)
    out = segmenters["sam-vit-b-mini"]([
        {"image": image, "prompts": {"points": [[-20, 500, 1]], "boxes": [[-30, -30, 1000, 1000]]}}
    ])
    _check_masks(out[0]["masks"], (50, 60), 2)


@pytest.mark.parametrize("name", list(MINI_DET))
def test_detection_segmenter(name):
    runner = sam.build_runner(MINI_DET[name])
    image = payloads.synthetic_image(90, 130, seed=6)
    dets = [{"box": [5.5, 6.0, 60.2, 70.9], "label": "a", "score": 0.9}, {"box": [70, 10, 128, 88], "class_id": 3}]
    out = runner([{"image": image, "detections": dets}, {"image": image, "detections": []}])
    _check_masks(out[0]["masks"], (90, 130), 2)
    assert out[1] == {"masks": []}
    assert runner([{"image": image, "detections": []}]) == [{"masks": []}]


@pytest.mark.parametrize(
    "prompts",
    [
        None,
        {},
        {"points": [], "boxes": []},
        {"points": [[1, 2]]},
        {"points": [[1, 2, 3]]},
        {"points": [[1, "a", 1]]},
        {"points": [[1, float("nan"), 1]]},
        {"boxes": [[10, 10, 5, 20]]},
        {"boxes": [[10, 10, 20, 5]]},
        {"boxes": [[1, 2, 3]]},
        {"boxes": "0 0 1 1"},
        {"masks": []},
        {"points": [[1, 1, 1]] * 65},
        [[1, 2, 1]],
    ],
)
def test_malformed_prompts_are_422(segmenters, prompts):
    payload = {"image": payloads.synthetic_image(32, 32)}
    if prompts is not None:
        payload["prompts"] = prompts
    with pytest.raises(PayloadError) as err:
        segmenters["sam-vit-b-mini"]([payload])
    assert err.value.status_code == 422 and err.value.field == "prompts"
    assert err.value.message.startswith("prompts: ")
    with pytest.raises(PayloadError):
        sam.validate_payload(MINI["sam-vit-b-mini"], payload)


@pytest.mark.parametrize("detections", [None, [{"box": [3, 3, 1, 1]}], [{"bbox": [0, 0, 1, 1]}], [[0, 0, 1, 1]]])
def test_malformed_detections_are_422(detections):
    runner = sam.build_runner(MINI_DET["sam-vit-b-grounded-mini"])
    with pytest.raises(PayloadError) as err:
        runner([{"image": payloads.synthetic_image(32, 32), "detections": detections}])
    assert err.value.status_code == 422 and err.value.field == "detections"


def test_bad_image_is_422(segmenters):
    with pytest.raises(PayloadError) as err:
        segmenters["sam-vit-b-mini"]([{"image": np.zeros((8, 8), np.uint8), "prompts": {"points": [[1, 1, 1]]}}])
    assert err.value.field == "image"


def test_mini_latency_b_below_h(segmenters):
    payload = [{"image": payloads.synthetic_image(320, 320), "prompts": {"boxes": [[10, 10, 200, 200]]}}]

    def best_ms(runner):
        runner(payload)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            runner(payload)
            times.append(time.perf_counter() - start)
        return min(times) * 1000

    b, h = best_ms(segmenters["sam-vit-b-mini"]), best_ms(segmenters["sam-vit-h-mini"])
    assert b < h, (b, h)
