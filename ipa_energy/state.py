"""Control state that outlives the process holding it: a small key-value store.

The planner's decision log and the energy actors' running totals must survive their actor
being killed and restarted by Ray. They are kept in Ray's GCS key-value store, as Serve's own
controller keeps its checkpoints (`ray.serve._private.storage.kv_store.RayInternalKVStore`):
it lives as long as the Ray cluster, on the head node, and any node's actor can read it back.
It does not survive the cluster itself (nor a GCS restart without GCS fault tolerance).

:class:`MemoryStore` is the same interface in a dict, for tests and for code run without Ray.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

__all__ = ["KV_NAMESPACE", "MemoryStore", "RayStore", "StateStore", "load_json", "save_json"]

#: the GCS key-value namespace of this package's state
KV_NAMESPACE = "ipa_energy"


class StateStore(Protocol):
    def put(self, key: str, value: bytes) -> None: ...
    def get(self, key: str) -> bytes | None: ...
    def keys(self, prefix: str) -> list[str]: ...
    def delete(self, prefix: str) -> int: ...
    def remove(self, key: str) -> None: ...


class MemoryStore:
    """A :class:`StateStore` in a dict (lost with the process)."""

    def __init__(self):
        self.data: dict[str, bytes] = {}

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = bytes(value)

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.data if k.startswith(prefix))

    def delete(self, prefix: str) -> int:
        gone = [k for k in self.data if k.startswith(prefix)]
        for k in gone:
            del self.data[k]
        return len(gone)

    def remove(self, key: str) -> None:
        self.data.pop(key, None)


class RayStore:
    """A :class:`StateStore` in the GCS of the Ray cluster this process is connected to."""

    def __init__(self, namespace: str = KV_NAMESPACE):
        self.namespace = namespace

    def put(self, key: str, value: bytes) -> None:
        from ray.experimental.internal_kv import _internal_kv_put

        _internal_kv_put(key, value, overwrite=True, namespace=self.namespace)

    def get(self, key: str) -> bytes | None:
        from ray.experimental.internal_kv import _internal_kv_get

        return _internal_kv_get(key, namespace=self.namespace)

    def keys(self, prefix: str) -> list[str]:
        from ray.experimental.internal_kv import _internal_kv_list

        return sorted(k.decode() for k in _internal_kv_list(prefix, namespace=self.namespace))

    def delete(self, prefix: str) -> int:
        from ray.experimental.internal_kv import _internal_kv_del

        return _internal_kv_del(prefix, del_by_prefix=True, namespace=self.namespace)

    def remove(self, key: str) -> None:
        from ray.experimental.internal_kv import _internal_kv_del

        _internal_kv_del(key, namespace=self.namespace)


def save_json(store: StateStore, key: str, doc: Any) -> None:
    store.put(key, json.dumps(doc, separators=(",", ":")).encode())


def load_json(store: StateStore, key: str) -> Any | None:
    raw = store.get(key)
    return None if raw is None else json.loads(raw)
