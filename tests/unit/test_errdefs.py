"""errdefs: every kind round-trips through its gRPC status name (what the client maps back)."""

from __future__ import annotations

import pytest

from pycontainerd import errdefs


@pytest.mark.parametrize("kind", sorted(set(errdefs.KINDS.values()), key=str))
def test_every_kind_maps_back_from_its_code(kind: type[errdefs.ContainerdError]) -> None:
    assert type(errdefs.from_code(kind.code, "m")) is kind


def test_out_of_range_and_unimplemented_are_kinds() -> None:
    assert isinstance(errdefs.from_code("OUT_OF_RANGE", "write at 3 must be at 0"), errdefs.OutOfRange)
    assert isinstance(errdefs.from_code("UNIMPLEMENTED", "no"), errdefs.Unimplemented)
    assert isinstance(errdefs.from_code("NO_SUCH_CODE", "?"), errdefs.Unknown)
