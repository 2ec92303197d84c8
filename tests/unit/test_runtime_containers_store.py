"""Container records: validation, field masks, filters, and the store over a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.events import Exchange
from pycontainerd.metadata.containers import Container, ContainerStore, TypedValue, apply_update, validate
from pycontainerd.metadata.db import Database

SPEC = TypedValue("types.containerd.io/opencontainers/runtime-spec/1/Spec", b"{}")


def _c(**kw: object) -> Container:
    base: dict[str, object] = {"id": "c1", "runtime_name": "io.containerd.runc.v2", "spec": SPEC}
    base.update(kw)
    return Container(**base)  # type: ignore[arg-type]


def test_validate_rules() -> None:
    validate(_c())
    with pytest.raises(errdefs.InvalidArgument, match="spec must be set"):
        validate(_c(spec=None))
    with pytest.raises(errdefs.InvalidArgument, match=r"Runtime\.Name"):
        validate(_c(runtime_name=""))
    with pytest.raises(errdefs.InvalidArgument, match=r"container\.ID"):
        validate(_c(id="bad id!"))
    with pytest.raises(errdefs.InvalidArgument, match="Snapshotter must be set"):
        validate(_c(snapshot_key="k"))
    with pytest.raises(errdefs.InvalidArgument, match="Extension"):
        validate(_c(extensions={"": TypedValue("x")}))


def test_apply_update_masks() -> None:
    cur = _c(labels={"a": "1", "b": "2"}, image="img1", snapshotter="overlayfs", snapshot_key="c1")
    new = _c(labels={"b": "3", "c": "4"}, image="img2", snapshotter="overlayfs", snapshot_key="c1")
    up = apply_update(cur, new, ["labels.b", "labels.a"])
    assert up.labels == {"b": "3"}  # a cleared (absent in new), b updated, c untouched
    assert up.image == "img1"
    up = apply_update(cur, new, [])
    assert up.labels == {"b": "3", "c": "4"}
    assert up.image == "img2"
    with pytest.raises(errdefs.InvalidArgument, match="immutable"):
        apply_update(cur, _c(snapshotter="native"), [])
    with pytest.raises(errdefs.InvalidArgument, match="immutable"):
        apply_update(cur, _c(runtime_name="io.containerd.runc.v1", snapshotter="overlayfs"), [])
    with pytest.raises(errdefs.InvalidArgument, match="cannot update"):
        apply_update(cur, new, ["runtime"])
    up = apply_update(cur, new, ["snapshotkey", "spec"])
    assert up.snapshot_key == "c1"
    assert up.spec == SPEC


def test_store_roundtrip_filters_and_events(tmp_path: Path) -> None:
    async def run() -> None:
        db = Database(tmp_path / "meta.db")
        await db.open()
        ex = Exchange()
        store = ContainerStore(db, ex)
        seen: list[str] = []

        async def collect() -> None:
            async for env in ex.subscribe():
                seen.append(env.topic)
                if env.topic == "/containers/delete":
                    return

        sub = asyncio.create_task(collect())
        await asyncio.sleep(0)
        try:
            opts = TypedValue("containerd.runc.v1.Options", b"\x32\x04runc")
            c = await store.create(
                "ns1",
                _c(
                    labels={"app": "web"},
                    image="docker.io/library/busybox:latest",
                    runtime_options=opts,
                    snapshotter="overlayfs",
                    snapshot_key="c1",
                    extensions={"x": TypedValue("t", b"\x00\x01")},
                ),
            )
            assert c.created_at_ns > 0
            with pytest.raises(errdefs.AlreadyExists, match='container "c1": already exists'):
                await store.create("ns1", _c())
            await store.create("ns1", _c(id="c2", runtime_name="io.containerd.runc.v1"))
            got = await store.get("ns1", "c1")
            assert got.runtime_options == opts
            assert got.spec == SPEC
            assert got.extensions == {"x": TypedValue("t", b"\x00\x01")}
            assert [x.id for x in await store.list("ns1")] == ["c1", "c2"]
            assert [x.id for x in await store.list("ns1", ["labels.app==web"])] == ["c1"]
            assert [x.id for x in await store.list("ns1", ["runtime.name==io.containerd.runc.v1"])] == ["c2"]
            assert [x.id for x in await store.list("ns1", ["image~=busybox"])] == ["c1"]
            assert [x.id for x in await store.list("ns1", ["id==c1", "id==c2"])] == ["c1", "c2"]
            assert await store.list("ns2") == []
            with pytest.raises(errdefs.NotFound):
                await store.get("ns2", "c1")
            up = await store.update("ns1", _c(labels={"app": "db"}), ["labels.app"])
            assert up.labels == {"app": "db"}
            assert up.updated_at_ns > up.created_at_ns
            await store.delete("ns1", "c1")
            with pytest.raises(errdefs.NotFound):
                await store.delete("ns1", "c1")
            await asyncio.wait_for(sub, 5)
            assert seen == [
                "/containers/create",
                "/containers/create",
                "/containers/update",
                "/containers/delete",
            ]
        finally:
            sub.cancel()
            await asyncio.to_thread(db.close)

    asyncio.run(run())
