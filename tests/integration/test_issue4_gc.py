"""Issue 4: garbage collection removes exactly what nothing references.

Every scenario runs against our daemon and against a real containerd (Debian's 1.6) with the
same real `ctr`, so the expectations are containerd's behaviour, not our reading of it.
The checks look at records (`ctr content ls`, `ctr snapshots ls`, `ctr leases ls`) and at
the disk (blob files, snapshot directories, bytes used).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import images
from tests.fixtures.containerd import running_containerd
from tests.fixtures.registry import Registry

from .daemon import running_daemon
from .issue4_support import (
    Target,
    add_lease_resource,
    assert_store_empty,
    blob_digests,
    content,
    image_mounted,
    image_names,
    leases,
    pull,
    snapshot_dirs,
    snapshots,
    trigger_gc,
)

pytestmark = pytest.mark.root

GC_ROOT = "containerd.io/gc.root"


@pytest.fixture(scope="module")
def refs(registry: Registry, busybox_image: images.BuiltImage, multilayer_image: images.BuiltImage,
         many_layers_image: images.BuiltImage) -> dict[str, str]:
    out = {}
    for name, img in (("busybox", busybox_image), ("multilayer", multilayer_image), ("layers50", many_layers_image)):
        images.push_to_registry(img, registry.url, f"issue4gc/{name}", "latest")
        out[name] = registry.ref(f"issue4gc/{name}")
    return out


@pytest.fixture(params=["pycontainerd", "containerd"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "pycontainerd":
        with running_daemon() as d:
            yield d
    else:
        if not Path("/usr/bin/containerd").exists():
            pytest.skip("containerd is not installed")
        with running_containerd() as c:
            yield c


def chain_rows(img: images.BuiltImage, upto: int | None = None) -> dict[str, tuple[str, str]]:
    chain = img.chain_ids[:upto]
    return {c: (chain[i - 1] if i else "", "Committed") for i, c in enumerate(chain)}


def blobs_of(img: images.BuiltImage) -> set[str]:
    return {b.digest for b in img.blobs()}


def test_lease_holds_image_content_until_deleted(target: Target, refs: dict[str, str],
                                                 multilayer_image: images.BuiltImage) -> None:
    img = multilayer_image
    pull(target, refs["multilayer"])
    target.ctr("leases", "create", "--id", "hold")
    add_lease_resource(target, "hold", img.manifest.digest)
    target.ctr("images", "rm", "--sync", refs["multilayer"])
    assert image_names(target) == []
    # the manifest is held; its gc.ref labels keep config and layers, the config keeps the snapshots
    assert blob_digests(target) == blobs_of(img)
    assert set(content(target)) == blobs_of(img)
    assert snapshots(target) == chain_rows(img)
    target.ctr("leases", "rm", "--sync", "hold")
    assert leases(target) == []
    assert_store_empty(target)


def test_mount_lease_holds_the_snapshot_chain(target: Target, refs: dict[str, str], tmp_path: Path,
                                              multilayer_image: images.BuiltImage) -> None:
    img, ref, mnt = multilayer_image, refs["multilayer"], tmp_path / "mnt"
    pull(target, ref)
    mnt.mkdir()
    target.ctr("images", "mount", ref, str(mnt))
    try:
        target.ctr("images", "rm", "--sync", ref)
        assert blob_digests(target) == set()  # nothing holds the content any more
        assert snapshots(target) == {**chain_rows(img), str(mnt): (img.chain_ids[-1], "View")}
        assert images.check_tree(mnt) == []
    finally:
        target.ctr("images", "unmount", str(mnt))  # no --rm: the view stays, held by the lease
    assert str(mnt) in snapshots(target)
    assert leases(target) == [str(mnt)]
    target.ctr("leases", "rm", "--sync", str(mnt))
    assert_store_empty(target)


def test_gc_root_label_pins_a_blob_and_a_snapshot(target: Target, refs: dict[str, str],
                                                  multilayer_image: images.BuiltImage) -> None:
    img = multilayer_image
    pull(target, refs["multilayer"])
    pinned_blob, pinned_snap = img.layers[-1].digest, img.chain_ids[1]
    target.ctr("content", "label", pinned_blob, f"{GC_ROOT}=pinned")
    target.ctr("snapshots", "label", pinned_snap, f"{GC_ROOT}=pinned")
    target.ctr("images", "rm", "--sync", refs["multilayer"])
    assert blob_digests(target) == {pinned_blob}
    assert set(content(target)) == {pinned_blob}
    assert snapshots(target) == chain_rows(img, 2)  # the pinned one and its parent
    assert len(snapshot_dirs(target)) == 2
    target.ctr("content", "label", pinned_blob, f"{GC_ROOT}=")
    target.ctr("snapshots", "label", pinned_snap, f"{GC_ROOT}=")
    trigger_gc(target)
    assert_store_empty(target)


def test_shared_layers_survive_removing_one_image(target: Target, refs: dict[str, str], tmp_path: Path,
                                                  multilayer_image: images.BuiltImage,
                                                  many_layers_image: images.BuiltImage) -> None:
    a, b = multilayer_image, many_layers_image
    assert blobs_of(a) & blobs_of(b) == {a.layers[0].digest}  # the busybox base layer
    pull(target, refs["multilayer"])
    pull(target, refs["layers50"])
    assert blob_digests(target) == blobs_of(a) | blobs_of(b)
    target.ctr("images", "rm", "--sync", refs["multilayer"])
    assert blob_digests(target) == blobs_of(b)
    assert snapshots(target) == chain_rows(b)
    assert len(snapshot_dirs(target)) == 50
    with image_mounted(target, refs["layers50"], tmp_path / "m") as m:
        assert (m / "bin" / "busybox").is_file() and (m / "layers" / "last").read_bytes() == b"49\n"
    target.ctr("images", "rm", "--sync", refs["layers50"])
    assert_store_empty(target)


def test_expired_lease_is_collected_at_the_next_gc(target: Target, refs: dict[str, str],
                                                   multilayer_image: images.BuiltImage,
                                                   busybox_image: images.BuiltImage) -> None:
    pull(target, refs["multilayer"])
    pull(target, refs["busybox"])
    trigger_gc(target)  # the collection the pulls' lease deletions scheduled is over before "old" exists
    target.ctr("leases", "create", "--id", "old", "--expires", "0", "containerd.io/gc.expire=2000-01-01T00:00:00Z")
    target.ctr("leases", "create", "--id", "fresh", "--expires", "1h")
    add_lease_resource(target, "old", multilayer_image.manifest.digest)
    add_lease_resource(target, "fresh", busybox_image.manifest.digest)
    assert sorted(leases(target)) == ["fresh", "old"]
    target.ctr("images", "rm", "--sync", refs["multilayer"], refs["busybox"])
    assert leases(target) == ["fresh"]
    assert blob_digests(target) == blobs_of(busybox_image)
    assert snapshots(target) == chain_rows(busybox_image)
    target.ctr("leases", "rm", "--sync", "fresh")
    assert_store_empty(target)


def test_content_prune_references(target: Target, refs: dict[str, str], tmp_path: Path,
                                  multilayer_image: images.BuiltImage) -> None:
    """`ctr content prune references`: Content.List, Content.Update dropping every
    gc.ref.content.l.* label (field paths labels.<key>), then Leases.Create + Leases.Delete
    with sync — the layer blobs go, the image (manifest, config, snapshots) stays usable."""
    img = multilayer_image
    pull(target, refs["multilayer"])
    target.ctr("content", "prune", "references")
    assert blob_digests(target) == {img.manifest.digest, img.config.digest}
    manifest_labels = content(target)[img.manifest.digest]
    assert not [k for k in manifest_labels if k.startswith("containerd.io/gc.ref.content.l.")], manifest_labels
    assert manifest_labels["containerd.io/gc.ref.content.config"] == img.config.digest
    assert snapshots(target) == chain_rows(img)
    assert leases(target) == []
    with image_mounted(target, refs["multilayer"], tmp_path / "m") as m:
        assert images.check_tree(m) == []
    target.ctr("images", "rm", "--sync", refs["multilayer"])
    assert_store_empty(target)


def test_namespaces_share_blobs_not_records(target: Target, refs: dict[str, str],
                                            multilayer_image: images.BuiltImage) -> None:
    img = multilayer_image
    pull(target, refs["multilayer"], namespace="ns-a")
    pull(target, refs["multilayer"], namespace="ns-b")
    target.ctr("images", "rm", "--sync", refs["multilayer"], namespace="ns-a")
    assert content(target, namespace="ns-a") == {} and snapshots(target, namespace="ns-a") == {}
    assert blob_digests(target) == blobs_of(img)  # still recorded in ns-b
    assert set(content(target, namespace="ns-b")) == blobs_of(img)
    assert len(snapshot_dirs(target)) == len(img.layers)
    target.ctr("images", "rm", "--sync", refs["multilayer"], namespace="ns-b")
    assert_store_empty(target, namespace="ns-b")
