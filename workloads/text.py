"""Text generation with a causal LM.

With a checkpoint, its own tokenizer (``AutoTokenizer.from_pretrained``) is used. Without
one the model has random weights and a byte-level tokenizer (one token per UTF-8 byte), so
no vocabulary has to be downloaded; generated text is then noise, labelled ``random``.
"""

from __future__ import annotations

from typing import Any

import torch

from ipa_energy.spec import VariantSpec
from workloads import models

__all__ = ["BOS", "BYTE_OFFSET", "BYTE_VOCAB", "EOS", "PAD", "ByteTokenizer", "Generator"]

PAD, BOS, EOS, BYTE_OFFSET = 0, 1, 2, 3
BYTE_VOCAB = 256 + BYTE_OFFSET


class ByteTokenizer:
    """UTF-8 bytes shifted past three special ids (pad, bos, eos)."""

    pad_token_id, bos_token_id, eos_token_id = PAD, BOS, EOS

    def encode(self, text: str) -> list[int]:
        return [BOS] + [b + BYTE_OFFSET for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        # Ids past the byte range are not bytes: a full-size vocabulary (the full tier's Qwen
        # configs, random weights) generates them, and they decode to nothing.
        return bytes(i - BYTE_OFFSET for i in ids if BYTE_OFFSET <= i < BYTE_VOCAB).decode("utf-8", errors="replace")


class _HFTokenizer:
    def __init__(self, checkpoint: str):
        import transformers

        self.tok = transformers.AutoTokenizer.from_pretrained(checkpoint)
        self.pad_token_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        self.eos_token_id = self.tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tok(text)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


class Generator:
    """Greedy generation for a batch of prompts, each with its own max_new_tokens."""

    def __init__(self, variant: VariantSpec):
        self.model = models.build_causal_lm(variant)
        self.tokenizer: Any = ByteTokenizer() if variant.checkpoint is None else _HFTokenizer(variant.checkpoint)
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.device = models.device_for(variant)

    def __call__(self, batch: list[dict]) -> list[dict]:
        encoded = [self.tokenizer.encode(p["prompt"]) for p in batch]
        budget = [int(p["max_new_tokens"]) for p in batch]
        longest = max(budget)
        keep = max(1, self.max_positions - longest)
        encoded = [ids[-keep:] for ids in encoded]  # keep the prompt's end when it is too long
        width = max(len(ids) for ids in encoded)
        pad = self.tokenizer.pad_token_id
        # Left padding so that every row's next token follows its own prompt.
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
        out = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=longest,
            min_new_tokens=longest,
            do_sample=False,
            pad_token_id=pad,
        )
        new = out[:, width:].tolist()
        return [
            {"text": self.tokenizer.decode(row[:n]), "new_tokens": n}
            for row, n in zip(new, budget)
        ]
