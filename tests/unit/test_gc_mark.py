"""The pure parts of GC: expiry parsing, label references, marking."""

from __future__ import annotations

from pycontainerd.metadata.gc import Graph, label_refs, mark, parse_expire


def test_parse_expire_forms() -> None:
    assert parse_expire("1970-01-01T00:00:10Z") == 10.0
    assert parse_expire("1970-01-01T00:00:10.123456789Z") == 10.123456
    assert parse_expire("1970-01-01T01:00:10+01:00") == 10.0
    assert parse_expire("") is None
    assert parse_expire("tomorrow") is None


def test_label_refs() -> None:
    refs = set(label_refs("ns", {
        "containerd.io/gc.ref.content.l.0": "sha256:a",
        "containerd.io/gc.ref.content": "sha256:b",
        "containerd.io/gc.ref.snapshot.overlayfs": "chain",
        "containerd.io/gc.ref.snapshot.native/1": "other",
        "unrelated": "x",
        "containerd.io/gc.ref.content.m.1": "",
    }))
    assert refs == {
        ("ns", "content", "sha256:a"),
        ("ns", "content", "sha256:b"),
        ("ns", "snapshots/overlayfs", "chain"),
        ("ns", "snapshots/native", "other"),
    }


def test_mark_follows_edges_within_namespace() -> None:
    g = Graph()
    img = ("a", "content", "sha256:index")
    man = ("a", "content", "sha256:manifest")
    layer = ("a", "content", "sha256:layer")
    orphan = ("a", "content", "sha256:orphan")
    snap = ("a", "snapshots/overlayfs", "top")
    parent = ("a", "snapshots/overlayfs", "bottom")
    other_ns = ("b", "content", "sha256:layer")
    g.nodes = {img, man, layer, orphan, snap, parent, other_ns}
    g.roots = {img}
    g.edges = {img: [man], man: [layer, snap], snap: [parent]}
    assert mark(g) == {img, man, layer, snap, parent}
    assert g.nodes - mark(g) == {orphan, other_ns}
