"""Image records: validation, filters, field masks, events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.events import Envelope, Exchange
from pycontainerd.metadata.db import Database
from pycontainerd.metadata.images import Descriptor, Image, ImageStore, apply_update, validate
from tests.fixtures.procs import wait_for_async

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def img(name: str, digest: str = D1, media_type: str = INDEX, size: int = 100, **labels: str) -> Image:
    return Image(name, Descriptor(media_type, digest, size), dict(labels))


def run(tmp: Path, fn: Callable[[ImageStore, list[Envelope]], Awaitable[None]]) -> None:
    async def main() -> None:
        db = Database(tmp / "meta.db")
        await db.open()
        ex = Exchange()
        events: list[Envelope] = []
        ready = asyncio.Event()

        async def collect() -> None:
            agen = ex.subscribe()
            ready.set()
            async for e in agen:
                events.append(e)

        task = asyncio.create_task(collect())
        await ready.wait()
        await asyncio.sleep(0)
        try:
            await fn(ImageStore(db, ex), events)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.to_thread(db.close)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (img(""), "image name must not be empty"),
        (img("x", digest=""), "Target.Digest"),
        (img("x", digest="sha256:abc"), "Target.Digest"),
        (img("x", size=0), "Target.Size must be greater than zero"),
        (img("x", media_type=""), "Target.MediaType must be set"),
        (img("x", k="v" * 5000), "image.Labels"),
    ],
)
def test_validate(image: Image, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=message.replace(".", r"\.")):
        validate(image)


def test_apply_update_masks() -> None:
    cur = Image("n", Descriptor(INDEX, D1, 10, {"a": "1"}), {"x": "1", "y": "2"}, created_at=5)
    new = Image("n", Descriptor(MANIFEST, D2, 20, {"b": "2"}), {"y": "", "z": "3"})
    up = apply_update(cur, new, ["labels.y", "labels.z"])
    assert up.labels == {"x": "1", "z": "3"}
    assert up.target.digest == D1
    up = apply_update(cur, new, ["target"])
    assert up.target == Descriptor(MANIFEST, D2, 20, {"b": "2"})
    assert up.labels == cur.labels
    up = apply_update(cur, new, ["annotations.b", "annotations.a"])
    assert up.target.annotations == {"b": "2"}
    assert up.target.digest == D1
    up = apply_update(cur, new, [])
    assert up.target.digest == D2
    assert up.labels == {"z": "3"}
    assert up.created_at == 5
    with pytest.raises(errdefs.InvalidArgument, match="cannot update 'name' field on image 'n'"):
        apply_update(cur, new, ["name"])
    assert cur.labels == {"x": "1", "y": "2"}  # not mutated


def test_crud_filters_events(tmp_path: Path) -> None:
    async def body(store: ImageStore, events: list[Envelope]) -> None:
        ns = "default"
        a = await store.create(ns, img("docker.io/library/busybox:latest", env="prod"))
        assert a.created_at > 0
        assert a.created_at == a.updated_at
        await store.create(ns, img("docker.io/library/alpine:3", digest=D2, media_type=MANIFEST))
        exc = await _raises(errdefs.AlreadyExists, store.create(ns, img("docker.io/library/busybox:latest")))
        assert str(exc) == 'image "docker.io/library/busybox:latest": already exists'
        assert (await store.get(ns, "docker.io/library/busybox:latest")).labels == {"env": "prod"}
        exc = await _raises(errdefs.NotFound, store.get(ns, "nope"))
        assert str(exc) == 'image "nope": not found'
        await _raises(errdefs.NotFound, store.get("other", "docker.io/library/busybox:latest"))

        async def names(*fs: str) -> list[str]:
            return [i.name for i in await store.list(ns, list(fs))]

        assert await names() == ["docker.io/library/alpine:3", "docker.io/library/busybox:latest"]
        assert await names("name==docker.io/library/alpine:3") == ["docker.io/library/alpine:3"]
        assert await names(f"target.digest=={D2}") == ["docker.io/library/alpine:3"]
        assert await names(f"target.mediatype=={INDEX}") == ["docker.io/library/busybox:latest"]
        assert await names("labels.env==prod") == ["docker.io/library/busybox:latest"]
        assert await names("name~=busybox", "name~=alpine") == await names()
        await _raises(errdefs.InvalidArgument, store.list(ns, ["name=="]))

        up = await store.update(ns, img("docker.io/library/busybox:latest", env="dev", extra="1"), ["labels.env"])
        assert up.labels == {"env": "dev"}
        assert up.updated_at > up.created_at == a.created_at
        up = await store.update(ns, img("docker.io/library/busybox:latest", digest=D2))
        assert up.target.digest == D2
        assert up.labels == {}
        await _raises(errdefs.NotFound, store.update(ns, img("nope")))
        await _raises(errdefs.InvalidArgument, store.update(ns, img("")))
        await _raises(errdefs.InvalidArgument, store.update(ns, img("docker.io/library/alpine:3", size=0)))

        await store.delete(ns, "docker.io/library/alpine:3", sync=True)
        exc = await _raises(errdefs.NotFound, store.delete(ns, "docker.io/library/alpine:3"))
        assert str(exc) == 'image "docker.io/library/alpine:3": not found'

        await wait_for_async(lambda: len(events) >= 5, 5, "five image events")
        got = [(e.topic, dict(e.payload)) for e in events]
        assert got == [
            ("/images/create", {"name": "docker.io/library/busybox:latest", "labels": {"env": "prod"}}),
            ("/images/create", {"name": "docker.io/library/alpine:3", "labels": {}}),
            ("/images/update", {"name": "docker.io/library/busybox:latest", "labels": {"env": "dev"}}),
            ("/images/update", {"name": "docker.io/library/busybox:latest", "labels": {}}),
            ("/images/delete", {"name": "docker.io/library/alpine:3"}),
        ]

    run(tmp_path, body)


async def _raises(kind: type[errdefs.ContainerdError], aw: Awaitable[object]) -> errdefs.ContainerdError:
    try:
        await aw
    except kind as exc:
        return exc
    raise AssertionError(f"expected {kind.__name__}")
