"""Image records: a name pointing at a target descriptor (index or manifest), with labels.

Rules, as containerd's metadata store has them:

- the name must be set; the target needs a valid digest, a size greater than zero and a
  media type (InvalidArgument otherwise); labels are validated;
- ``update`` applies a field mask: ``labels``, ``labels.<key>``, ``annotations``,
  ``annotations.<key>`` (the target's annotations) and ``target`` (replaced as a unit);
  any other path is InvalidArgument; with no mask the labels, target and annotations are
  all replaced;
- writes publish ``/images/create|update|delete`` with the name (and labels).

``delete(..., sync=True)`` runs the garbage collector hook, when one is installed, before
returning (``ctr images rm --sync``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from .. import errdefs
from .. import labels as labelutil
from ..content.helpers import is_valid_digest
from ..events import Exchange
from .db import Database, dumps, ensure_namespace, loads, now_ns

T = TypeVar("T")


@dataclass
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class Image:
    name: str
    target: Descriptor
    labels: dict[str, str] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0


def validate(image: Image) -> None:
    if not image.name:
        raise errdefs.InvalidArgument("image name must not be empty")
    try:
        labelutil.validate_all(image.labels)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"image.Labels: {exc}") from exc
    t = image.target
    if not is_valid_digest(t.digest):
        raise errdefs.InvalidArgument(
            f"image {image.name!r}: Target.Digest {t.digest!r} invalid: invalid checksum digest format"
        )
    if t.size <= 0:
        raise errdefs.InvalidArgument(f"image {image.name!r}: Target.Size must be greater than zero")
    if not t.media_type:
        raise errdefs.InvalidArgument(f"image {image.name!r}: Target.MediaType must be set")


def adaptor(image: Image) -> Callable[[tuple[str, ...]], str | None]:
    """Filter fields: ``name``, ``target.digest``, ``target.mediatype``, ``labels.<k>``,
    ``annotations.<k>``."""

    def get(path: tuple[str, ...]) -> str | None:
        if not path:
            return None
        head = path[0]
        if head == "name":
            return image.name or None
        if head == "target" and len(path) >= 2:
            if path[1] == "digest":
                return image.target.digest or None
            if path[1] == "mediatype":
                return image.target.media_type or None
            return None
        if head in ("labels", "annotations"):
            m = image.labels if head == "labels" else image.target.annotations
            if len(path) == 1:
                return "" if m else None
            return m.get(".".join(path[1:]))
        return None

    return get


def apply_update(current: Image, new: Image, paths: Sequence[str]) -> Image:
    """Apply a field mask (pure)."""
    if not paths:
        return replace(
            new,
            labels=_apply_labels(current, new, labelutil.FIELD),
            target=replace(new.target, annotations={k: v for k, v in new.target.annotations.items() if v}),
            created_at=current.created_at,
        )
    updated = replace(
        current,
        labels=dict(current.labels),
        target=replace(current.target, annotations=dict(current.target.annotations)),
    )
    for path in paths:
        if labelutil.is_field_path(path):
            continue  # applied after the loop: like containerd, a bad path is reported before a bad label
        if path.startswith("annotations."):
            key = path[len("annotations.") :]
            updated.target.annotations[key] = new.target.annotations.get(key, "")
        elif path == "annotations":
            updated.target.annotations = dict(new.target.annotations)
        elif path == "target":
            updated.target = replace(new.target, annotations=dict(new.target.annotations))
        else:
            raise errdefs.InvalidArgument(f"cannot update {path!r} field on image {current.name!r}")
    label_paths = [p for p in paths if labelutil.is_field_path(p)]
    if label_paths:
        updated.labels = _apply_labels(current, new, label_paths)
    updated.target.annotations = {k: v for k, v in updated.target.annotations.items() if v}
    return updated


def _apply_labels(current: Image, new: Image, paths: str | Sequence[str]) -> dict[str, str]:
    return labelutil.apply_field_paths(
        current.labels, new.labels, paths, what=f"image {current.name!r}", field="image.Labels"
    )


def _from_row(row: sqlite3.Row) -> Image:
    return Image(
        name=row["name"],
        target=Descriptor(
            media_type=row["media_type"],
            digest=row["digest"],
            size=row["size"],
            annotations={str(k): str(v) for k, v in loads(row["annotations"]).items()},
        ),
        labels={str(k): str(v) for k, v in loads(row["labels"]).items()},
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _get(conn: sqlite3.Connection, ns: str, name: str) -> Image | None:
    row = conn.execute("SELECT * FROM images WHERE namespace=? AND name=?", (ns, name)).fetchone()
    return _from_row(row) if row is not None else None


def _write(conn: sqlite3.Connection, ns: str, im: Image) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO images (namespace, name, media_type, digest, size, annotations, labels,"
        " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            ns,
            im.name,
            im.target.media_type,
            im.target.digest,
            im.target.size,
            dumps(im.target.annotations),
            dumps(im.labels),
            im.created_at,
            im.updated_at,
        ),
    )


class ImageStore:
    """Namespaced image records in the metadata database.

    ``writes()`` tells a reader that keeps what it derived from the records (the CRI's image
    list) whether an image write happened since: it is ``None`` while one is in flight, and
    changes with each write that began or ended."""

    def __init__(
        self, db: Database, exchange: Exchange | None = None, *, collect: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        self.db = db
        self.exchange = exchange
        # the garbage collector's "collect now" (images rm --sync); None without a collector
        self.gc_hook = collect

    def _publish(self, ns: str, topic: str, payload: dict[str, object]) -> None:
        if self.exchange is not None:
            self.exchange.publish(ns, topic, payload)

    def writes(self) -> int | None:
        """The image writes that began or ended so far in this database; None while one is in flight."""
        return self.db.counted_writes("images")

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.db.counted_write("images", fn)

    async def get(self, namespace: str, name: str) -> Image:
        im = await self.db.read(lambda c: _get(c, namespace, name))
        if im is None:
            raise errdefs.NotFound(f'image "{name}": not found')
        return im

    async def list(self, namespace: str, filter_exprs: Sequence[str] = ()) -> list[Image]:
        from .. import filters  # the filter language (and regexp) at the first filtered call: W6, idle PSS
        flt = filters.parse_all(list(filter_exprs))
        rows = await self.db.read(
            lambda c: c.execute("SELECT * FROM images WHERE namespace=? ORDER BY name", (namespace,)).fetchall()
        )
        return [im for im in map(_from_row, rows) if flt.match(adaptor(im))]

    async def create(self, namespace: str, image: Image) -> Image:
        if not image.name:
            raise errdefs.InvalidArgument("image name is required for create")
        validate(image)
        # empty values are not stored (as containerd's label buckets)
        im = replace(
            image,
            labels={k: v for k, v in image.labels.items() if v},
            target=replace(image.target, annotations={k: v for k, v in image.target.annotations.items() if v}),
        )
        im.created_at = im.updated_at = now_ns()

        def tx(conn: sqlite3.Connection) -> None:
            ensure_namespace(conn, namespace)
            if _get(conn, namespace, im.name) is not None:
                raise errdefs.AlreadyExists(f'image "{im.name}": already exists')
            _write(conn, namespace, im)

        await self._write(tx)
        self._publish(namespace, "/images/create", {"name": im.name, "labels": dict(im.labels)})
        return im

    async def update(self, namespace: str, image: Image, paths: Sequence[str] = ()) -> Image:
        if not image.name:
            raise errdefs.InvalidArgument("image name is required for update")

        def tx(conn: sqlite3.Connection) -> Image:
            current = _get(conn, namespace, image.name)
            if current is None:
                raise errdefs.NotFound(f'image "{image.name}": not found')
            updated = apply_update(current, image, paths)
            validate(updated)
            updated.created_at = current.created_at
            updated.updated_at = max(now_ns(), current.updated_at + 1)
            _write(conn, namespace, updated)
            return updated

        updated = await self._write(tx)
        self._publish(namespace, "/images/update", {"name": updated.name, "labels": dict(updated.labels)})
        return updated

    async def delete(self, namespace: str, name: str, *, sync: bool = False) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            cur = conn.execute("DELETE FROM images WHERE namespace=? AND name=?", (namespace, name))
            if cur.rowcount == 0:
                raise errdefs.NotFound(f'image "{name}": not found')

        await self._write(tx)
        self.db.notify_deleted()
        self._publish(namespace, "/images/delete", {"name": name})
        if sync and self.gc_hook is not None:
            await self.gc_hook()
