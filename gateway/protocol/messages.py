"""The generated protobuf classes, under one short name.

The code is generated from `proto/` by `make proto` (the pinned grpcio-tools). Import `pb` from here
rather than from the generated path, so that the generated layout can change in one place.
"""

from __future__ import annotations

try:
    from gateway.protocol.generated.ningbo.gateway.v1 import gateway_pb2 as pb
except ImportError as exc:  # pragma: no cover - only without `make proto`
    raise ImportError(
        "the protobuf code is not generated: run `make proto` (or `make test` / `make run`)"
    ) from exc

# The oneof field names of Request.body, in the order the proto declares them.
REQUEST_BODIES: tuple[str, ...] = tuple(
    f.name for f in pb.Request.DESCRIPTOR.oneofs_by_name["body"].fields
)

__all__ = ["REQUEST_BODIES", "pb"]
