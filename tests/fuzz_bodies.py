"""Seeded hostile request bodies: random bytes, random JSON and mutations of a valid body.

Shared by the request unit tests (thousands, through parse_body) and the serving integration
test (a few per pipeline, over HTTP). The same seed gives the same bodies.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterator


def random_json(rng: random.Random, depth: int = 0) -> object:
    """A JSON value of random type; containers nest a few levels, now and then very deep."""
    kind = rng.randrange(9 if depth < 6 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, rng.uniform(-1e9, 1e9), 1e308, -0.0])
    if kind == 3:
        return "".join(rng.choice(string.printable + "\u00e9\u4e2d\U0001f600\\\"[]{}") for _ in range(rng.randrange(40)))
    if kind == 4:
        return ""
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 6:
        return {rng.choice(["image", "prompt", "prompts", "max_new_tokens", "points", "boxes", "x"]): random_json(rng, depth + 1)
                for _ in range(rng.randrange(4))}
    if kind == 7:  # deep nesting
        value: object = 1
        for _ in range(rng.choice([40, 200])):  # (json.dumps itself recurses; deeper in hostile_bodies)
            value = [value] if rng.random() < 0.5 else {"a": value}
        return value
    return [1] * rng.choice([100, 20_000])  # many values


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(5)
        at = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip a byte
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif op == 1:  # insert structure characters
            data[at:at] = rng.choice([b"[", b"{", b"]", b"}", b",", b'"', b"\\", b":", b"\x00", b"[" * 3000])
        elif op == 2:  # delete a span
            del data[at:at + rng.randrange(1, 64)]
        elif op == 3:  # truncate
            del data[at:]
        else:  # repeat a span
            span = bytes(data[at:at + rng.randrange(1, 32)])
            data[at:at] = span * rng.randrange(1, 50)
    return bytes(data)


def hostile_bodies(valid: dict, seed: int, count: int) -> Iterator[bytes]:
    """`count` bodies built from `valid` (a valid request of the pipeline under test)."""
    rng = random.Random(seed)
    raw = json.dumps(valid).encode()
    for _ in range(count):
        kind = rng.randrange(6)
        if kind == 0:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
        elif kind == 5:  # nested deeper than any encoder or decoder recursion allows
            n = rng.choice([5_000, 200_000])
            yield b'{"%s": ' % rng.choice(list(valid)).encode() + b"[" * n + b"]" * n + b"}"
        elif kind == 1:
            yield json.dumps(random_json(rng)).encode()
        elif kind == 2:  # one field replaced by a random value, or one added
            body = dict(valid)
            body[rng.choice([*valid, "extra"])] = random_json(rng)
            yield json.dumps(body).encode()
        else:
            yield _mutate(rng, raw)
