"""Label size limits and well-known keys."""

from __future__ import annotations

import pytest

from pycontainerd import errdefs, labels


def test_within_limit() -> None:
    labels.validate("k", "v" * (4096 - 1))
    labels.validate_all({"a": "b", labels.GC_ROOT: "2024-01-01T00:00:00Z"})


def test_over_limit_names_key() -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc:
        labels.validate("mykey", "v" * 4092)
    assert str(exc.value) == (
        "label key and value length (4097 bytes) greater than maximum size (4096 bytes), key: mykey"
    )


def test_counts_utf8_bytes() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="4098 bytes"):
        labels.validate("k", "é" * 2048 + "x")


def test_long_key_truncated_in_message() -> None:
    key = "k" * 5000
    with pytest.raises(errdefs.InvalidArgument) as exc:
        labels.validate(key, "")
    assert str(exc.value).endswith("key: " + "k" * 64)


def test_validate_all_reports_offender() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="key: big"):
        labels.validate_all({"ok": "1", "big": "x" * 5000})


def test_well_known_keys() -> None:
    assert labels.GC_REF_CONTENT == "containerd.io/gc.ref.content"
    assert labels.GC_REF_SNAPSHOT == "containerd.io/gc.ref.snapshot"
    assert labels.GC_ROOT == "containerd.io/gc.root"
    assert labels.GC_EXPIRE == "containerd.io/gc.expire"
    assert labels.GC_FLAT == "containerd.io/gc.flat"
    assert labels.UNCOMPRESSED == "containerd.io/uncompressed"
    assert labels.SNAPSHOT_REF == "containerd.io/snapshot.ref"
    assert labels.DEFAULTS_SNAPSHOTTER == "containerd.io/defaults/snapshotter"
    assert labels.DEFAULTS_RUNTIME == "containerd.io/defaults/runtime"
    assert labels.IMAGE_STOP_SIGNAL == "io.containerd.image.config.stop-signal"
    assert labels.distribution_source_label("docker.io") == "containerd.io/distribution.source.docker.io"
    assert labels.gc_ref_snapshot_label("overlayfs") == "containerd.io/gc.ref.snapshot.overlayfs"
