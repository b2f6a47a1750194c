"""Task runners: pre-process a batch of payloads, run the model once, post-process.

A runner is built once per replica from its VariantSpec and called with a list of payload
dicts (the keys its task consumes, see ``ipa_energy.spec.TASK_IO``); it returns one output
dict per payload (the keys its task produces). Images arrive as uint8 HxWx3 numpy arrays.

Classification and detection run here; generation is :class:`workloads.text.Generator`, and
segmentation :mod:`workloads.sam` (imported only when a SAM variant is built).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ipa_energy.spec import VariantSpec
from workloads import images, models, text
from workloads.payloads import Payload, Runner

__all__ = ["RUNNERS", "Classifier", "CropClassifier", "Detector", "build_runner"]

# ImageNet normalisation of torchvision's classifiers (per channel, on [0, 1] pixels).
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _to_float(image: bytes | np.ndarray) -> torch.Tensor:
    # Arrays from the object store are read-only; torch wants a writable buffer.
    pixels = np.require(images.decode(image), requirements=["C", "W"])
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)


class Classifier:
    """Image classification: resize to the variant's input size, top-k labels."""

    def __init__(self, variant: VariantSpec):
        self.model = models.build_torchvision(variant)
        self.device = models.device_for(variant)
        self.size = int(variant.build_args.get("input_size", 224))
        self.top_k = int(variant.build_args.get("top_k", 5))
        self.names = models.categories(variant.architecture)

    def _prepare(self, image: torch.Tensor) -> torch.Tensor:
        image = torch.nn.functional.interpolate(
            image.unsqueeze(0), size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
        )[0]
        return (image - _MEAN) / _STD

    def _labels(self, logits: torch.Tensor) -> list[list[dict]]:
        probs = logits.softmax(-1)
        scores, ids = probs.topk(min(self.top_k, probs.shape[-1]), dim=-1)
        return [
            [{"class_id": int(i), "label": self._name(int(i)), "score": round(float(s), 6)} for s, i in zip(srow, irow)]
            for srow, irow in zip(scores, ids)
        ]

    def _name(self, i: int) -> str:
        return self.names[i] if i < len(self.names) else str(i)

    def classify(self, images: list[torch.Tensor]) -> list[list[dict]]:
        if not images:
            return []
        return self._labels(self.model(torch.stack([self._prepare(im) for im in images]).to(self.device)).cpu())

    def __call__(self, batch: list[Payload]) -> list[Payload]:
        labels = self.classify([_to_float(p["image"]) for p in batch])
        return [{"labels": item} for item in labels]


class CropClassifier(Classifier):
    """IPA's second video stage: classify every detected box's crop, all requests in one pass."""

    def __call__(self, batch: list[Payload]) -> list[Payload]:
        crops, owners = [], []
        for n, p in enumerate(batch):
            image = _to_float(p["image"])
            _, h, w = image.shape
            for det in p["detections"]:
                x1, y1, x2, y2 = det["box"]
                x1, y1 = min(max(int(x1), 0), w - 1), min(max(int(y1), 0), h - 1)
                x2, y2 = max(min(int(np.ceil(x2)), w), x1 + 1), max(min(int(np.ceil(y2)), h), y1 + 1)
                crops.append(image[:, y1:y2, x1:x2])
                owners.append(n)
        out: list[Payload] = [{"crop_labels": []} for _ in batch]
        for owner, labels in zip(owners, self.classify(crops)):
            out[owner]["crop_labels"].append(labels[0])
        return out


class Detector:
    """Object detection with a torchvision detector; boxes in the input image's pixels."""

    def __init__(self, variant: VariantSpec):
        self.model = models.build_torchvision(variant)
        self.device = models.device_for(variant)
        self.names = models.categories(variant.architecture)

    def __call__(self, batch: list[Payload]) -> list[Payload]:
        results = self.model([_to_float(p["image"]).to(self.device) for p in batch])
        out = []
        for r in results:
            dets = [
                {
                    "box": [round(float(c), 2) for c in box],
                    "class_id": int(label),
                    "label": self.names[int(label)] if int(label) < len(self.names) else str(int(label)),
                    "score": round(float(score), 6),
                }
                for box, label, score in zip(r["boxes"], r["labels"], r["scores"])
            ]
            out.append({"detections": dets})
        return out


def _segmenter(variant: VariantSpec) -> Runner:
    from workloads import sam  # segment_anything is imported only by replicas that need it

    return sam.build_runner(variant)


RUNNERS: dict[str, Callable[[VariantSpec], Runner]] = {
    "classify": Classifier,
    "classify-crops": CropClassifier,
    "detect": Detector,
    "generate": text.Generator,
    "segment": _segmenter,
    "segment-detections": _segmenter,
}


def build_runner(variant: VariantSpec) -> Runner:
    """The runner of `variant`'s task, built once per replica (the model is built here)."""
    return RUNNERS[variant.task](variant)
