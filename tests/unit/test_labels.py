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


# --- the field-mask rule -------------------------------------------------------------------
CUR = {"a": "1", "b": "2"}


@pytest.mark.parametrize(
    ("paths", "new", "want"),
    [
        (["labels.a"], {"a": "9"}, {"a": "9", "b": "2"}),
        (["labels.c"], {"c": "3", "b": "x"}, {"a": "1", "b": "2", "c": "3"}),  # unnamed keys are ignored
        (["labels.a"], {"a": ""}, {"b": "2"}),  # an empty value removes
        (["labels.a"], {}, {"b": "2"}),  # so does a missing one
        (["labels.zz"], {}, CUR),  # removing what is not there is no error
        (["labels"], {"x": "1", "y": ""}, {"x": "1"}),  # replace all; empty values are not kept
        (["labels.a", "labels"], {"a": "9"}, {"a": "9"}),  # in order: the replace wins
        (["labels", "labels.a"], {"x": "9"}, {"x": "9"}),
        (["labels.com.example.k"], {"com.example.k": "v"}, {**CUR, "com.example.k": "v"}),  # dots in keys
        ("labels.a", {"a": "9"}, {"a": "9", "b": "2"}),  # a single path
        ([], {"x": "1"}, CUR),  # no paths: nothing changes
        (["labels."], {}, CUR),  # the empty key with no value: nothing to set
    ],
)
def test_apply_field_paths(paths: list[str] | str, new: dict[str, str], want: dict[str, str]) -> None:
    current = dict(CUR)
    assert labels.apply_field_paths(current, new, paths, what="thing") == want
    assert current == CUR  # not mutated


def test_apply_field_paths_drops_stale_empty_values() -> None:
    assert labels.apply_field_paths({"a": "1", "old": ""}, {"b": "2"}, ["labels.b"], what="x") == {"a": "1", "b": "2"}


def test_is_field_path() -> None:
    assert labels.is_field_path("labels")
    assert labels.is_field_path("labels.a.b")
    assert labels.is_field_path("labels.")
    assert not labels.is_field_path("labelsx")
    assert not labels.is_field_path("annotations.a")
    assert not labels.is_field_path("")


def test_other_path_names_it_and_the_object() -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc:
        labels.apply_field_paths(CUR, {"a": "9"}, ["labels.a", "spec"], what="image 'x'")
    assert str(exc.value) == "cannot update 'spec' field on image 'x'"


def test_bad_path_reported_before_bad_label() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="cannot update 'nope'"):
        labels.apply_field_paths(CUR, {"a": "v" * 5000}, ["labels.a", "nope"], what="x")


@pytest.mark.parametrize(
    ("paths", "new"),
    [
        (["labels.z"], {"z": "v" * 5000}),
        (["labels"], {"ok": "1", "z": "v" * 5000}),
        # containerd validates before dropping empty values: removing an impossible key is refused too
        (["labels." + "z" * 5000], {}),
    ],
)
def test_merged_labels_are_validated(paths: list[str], new: dict[str, str]) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=r"^image\.Labels: label key and value length .*key: z"):
        labels.apply_field_paths(CUR, new, paths, what="x", field="image.Labels")
    with pytest.raises(errdefs.InvalidArgument, match=r"^label key and value length"):
        labels.apply_field_paths(CUR, new, paths, what="x")


def test_unnamed_bad_label_is_ignored() -> None:
    assert labels.apply_field_paths(CUR, {"a": "9", "big": "v" * 5000}, ["labels.a"], what="x") == {"a": "9", "b": "2"}


@pytest.mark.parametrize("paths", [["labels."], ["labels"]])
def test_empty_key_with_a_value_is_refused(paths: list[str]) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=r"^info\.Labels: label key must not be empty$"):
        labels.apply_field_paths(CUR, {"": "v"}, paths, what="x", field="info.Labels")
