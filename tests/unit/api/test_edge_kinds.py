"""The edge guards unary calls and bidirectional streams; no method of another kind exists.

A server-streaming or client-streaming method would have no guard (no key, no role, no limits),
so the edge does not serve one at all; this keeps the API free of them until a guard exists.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool

from rating_service.api.server import SERVICE_NAMES


def test_every_method_is_unary_or_a_bidirectional_stream() -> None:
    pool = descriptor_pool.Default()
    kinds = {
        f"{name}/{method.name}": (method.client_streaming, method.server_streaming)
        for name in SERVICE_NAMES
        for method in pool.FindServiceByName(name).methods
    }
    assert len(kinds) > 30
    unguarded = {m for m, kind in kinds.items() if kind not in {(False, False), (True, True)}}
    assert unguarded == set()
