"""Container records: the metadata a task is created from (``ctr containers``).

A container is only a record: its id, labels, image name, the runtime (name plus an opaque
options blob), the OCI spec (an opaque blob, JSON for runc), the snapshotter and snapshot
key of its rootfs, and extensions.  Opaque values are kept exactly as the client sent them,
as ``TypedValue(type_url, value)``, so the store needs no protobuf.

Rules (as containerd's metadata store has them):

- the id must be a valid identifier; the runtime name and the spec must be set; a snapshot
  key requires a snapshotter; label keys and values are validated;
- ``update`` applies a field mask: ``labels``, ``labels.<key>``, ``spec``, ``image``,
  ``snapshotkey``, ``extensions``, ``extensions.<key>``; any other path is InvalidArgument.
  With no mask those mutable fields are all replaced, and a changed snapshotter or runtime
  name is refused (they are immutable);
- writes publish ``/containers/create|update|delete``.
"""

from __future__ import annotations

import base64
import builtins
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .. import errdefs, identifiers
from .. import labels as labelutil
from ..events import Exchange
from .db import Database, dumps, ensure_namespace, loads, now_ns


@dataclass(frozen=True)
class TypedValue:
    """An opaque typed blob (a protobuf Any on the wire): type URL plus bytes."""

    type_url: str
    value: bytes = b""


@dataclass
class Container:
    id: str
    runtime_name: str = ""
    spec: TypedValue | None = None
    runtime_options: TypedValue | None = None
    labels: dict[str, str] = field(default_factory=dict)
    image: str = ""
    snapshotter: str = ""
    snapshot_key: str = ""
    sandbox: str = ""
    extensions: dict[str, TypedValue] = field(default_factory=dict)
    created_at_ns: int = 0
    updated_at_ns: int = 0


MUTABLE_ON_REPLACE = ("labels", "spec", "extensions", "image", "snapshotkey")


def validate(c: Container) -> None:
    """Raise InvalidArgument when the record breaks containerd's container rules."""
    try:
        identifiers.validate(c.id)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"container.ID: {exc}") from exc
    for key in c.extensions:
        if not key:
            raise errdefs.InvalidArgument("container.Extension keys must not be zero-length")
    try:
        labelutil.validate_all(c.labels)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"containers.Labels: {exc}") from exc
    if not c.runtime_name:
        raise errdefs.InvalidArgument("container.Runtime.Name must be set")
    if c.spec is None:
        raise errdefs.InvalidArgument("container spec must be set (container.Spec)")
    if c.snapshot_key and not c.snapshotter:
        raise errdefs.InvalidArgument("container.Snapshotter must be set if container.SnapshotKey is set")


def adaptor(c: Container) -> Callable[[tuple[str, ...]], str | None]:
    """The filter adaptor: ``id``, ``image``, ``runtime.name``, ``snapshotter``, ``labels.<k>``..."""

    def get(path: tuple[str, ...]) -> str | None:
        if not path:
            return None
        head = path[0]
        if head == "id":
            return c.id or None
        if head == "image":
            return c.image or None
        if head == "runtime":
            if len(path) == 2 and path[1] == "name":
                return c.runtime_name or None
            return None
        if head == "snapshotter":
            return c.snapshotter or None
        if head in ("snapshotkey", "snapshot_key"):
            return c.snapshot_key or None
        if head == "sandbox":
            return c.sandbox or None
        if head == "labels":
            key = ".".join(path[1:])
            return c.labels.get(key) if c.labels else None
        return None

    return get


# -- row (de)serialisation ------------------------------------------------------------------
def _typed_to_json(values: Mapping[str, TypedValue]) -> str:
    return dumps({k: {"type_url": v.type_url, "value": base64.b64encode(v.value).decode()} for k, v in values.items()})


def _typed_from_json(text: str | None) -> dict[str, TypedValue]:
    out: dict[str, TypedValue] = {}
    for k, v in loads(text).items():
        out[k] = TypedValue(str(v.get("type_url", "")), base64.b64decode(v.get("value", "")))
    return out


def _from_row(row: sqlite3.Row) -> Container:
    spec = TypedValue(row["spec_type"], bytes(row["spec"] or b"")) if row["spec_type"] or row["spec"] else None
    opts = (
        TypedValue(row["runtime_options_type"], bytes(row["runtime_options"] or b""))
        if row["runtime_options_type"] or row["runtime_options"]
        else None
    )
    return Container(
        id=row["id"],
        runtime_name=row["runtime_name"],
        spec=spec,
        runtime_options=opts,
        labels={str(k): str(v) for k, v in loads(row["labels"]).items()},
        image=row["image"],
        snapshotter=row["snapshotter"],
        snapshot_key=row["snapshot_key"],
        sandbox=row["sandbox"],
        extensions=_typed_from_json(row["extensions"]),
        created_at_ns=row["created_at"],
        updated_at_ns=row["updated_at"],
    )


def _write_row(conn: sqlite3.Connection, ns: str, c: Container, *, insert: bool) -> None:
    values: tuple[Any, ...] = (
        dumps(c.labels),
        c.image,
        c.runtime_name,
        c.runtime_options.type_url if c.runtime_options else "",
        c.runtime_options.value if c.runtime_options else None,
        c.spec.type_url if c.spec else "",
        c.spec.value if c.spec else None,
        c.snapshotter,
        c.snapshot_key,
        c.sandbox,
        _typed_to_json(c.extensions),
        c.created_at_ns,
        c.updated_at_ns,
    )
    if insert:
        conn.execute(
            "INSERT INTO containers (labels, image, runtime_name, runtime_options_type, runtime_options,"
            " spec_type, spec, snapshotter, snapshot_key, sandbox, extensions, created_at, updated_at,"
            " namespace, id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (*values, ns, c.id),
        )
    else:
        conn.execute(
            "UPDATE containers SET labels=?, image=?, runtime_name=?, runtime_options_type=?,"
            " runtime_options=?, spec_type=?, spec=?, snapshotter=?, snapshot_key=?, sandbox=?, extensions=?,"
            " created_at=?,"
            " updated_at=? WHERE namespace=? AND id=?",
            (*values, ns, c.id),
        )


def _get(conn: sqlite3.Connection, ns: str, cid: str) -> Container | None:
    row = conn.execute("SELECT * FROM containers WHERE namespace=? AND id=?", (ns, cid)).fetchone()
    return _from_row(row) if row is not None else None


def apply_update(current: Container, new: Container, paths: Sequence[str]) -> Container:
    """Apply a field mask (pure; raises InvalidArgument for paths that may not change)."""
    updated = replace(current, labels=dict(current.labels), extensions=dict(current.extensions))
    if not paths:
        if current.snapshotter != new.snapshotter:
            raise errdefs.InvalidArgument("container.Snapshotter field is immutable")
        if current.runtime_name != new.runtime_name:
            raise errdefs.InvalidArgument("container.Runtime.Name field is immutable")
        paths = MUTABLE_ON_REPLACE
    for path in paths:
        if labelutil.is_field_path(path):
            continue  # applied after the loop: like containerd, a bad path is reported before a bad label
        if path.startswith("extensions."):
            key = path[len("extensions.") :]
            if key in new.extensions:
                updated.extensions[key] = new.extensions[key]
            else:
                updated.extensions.pop(key, None)
        elif path == "spec":
            updated.spec = new.spec
        elif path == "extensions":
            updated.extensions = dict(new.extensions)
        elif path == "image":
            updated.image = new.image
        elif path in ("snapshotkey", "snapshot_key"):
            updated.snapshot_key = new.snapshot_key
        else:
            raise errdefs.InvalidArgument(f'cannot update "{path}" field on "{current.id}"')
    label_paths = [p for p in paths if labelutil.is_field_path(p)]
    if label_paths:
        updated.labels = labelutil.apply_field_paths(
            current.labels, new.labels, label_paths, what=f'"{current.id}"', field="containers.Labels"
        )
    return updated


class ContainerStore:
    """Namespaced container records in the metadata database."""

    def __init__(self, db: Database, exchange: Exchange | None = None) -> None:
        self.db = db
        self.exchange = exchange

    def _publish(self, ns: str, topic: str, payload: dict[str, Any]) -> None:
        if self.exchange is not None:
            self.exchange.publish(ns, topic, payload)

    async def get(self, namespace: str, container_id: str) -> Container:
        # an empty id names no container: NotFound, as containerd answers
        c = await self.db.read(lambda conn: _get(conn, namespace, container_id))
        if c is None:
            raise errdefs.NotFound(f'container "{container_id}" in namespace "{namespace}": not found')
        return c

    async def list(self, namespace: str, filter_exprs: Sequence[str] = ()) -> list[Container]:
        try:
            from .. import filters  # the filter language (and regexp) at the first filtered call: W6, idle PSS
            flt = filters.parse_all(list(filter_exprs))
        except errdefs.InvalidArgument:
            raise
        except Exception as exc:
            raise errdefs.InvalidArgument(f"invalid container filter: {exc}") from exc

        def tx(conn: sqlite3.Connection) -> list[Container]:
            rows = conn.execute("SELECT * FROM containers WHERE namespace=? ORDER BY id", (namespace,)).fetchall()
            return [_from_row(r) for r in rows]

        return [c for c in await self.db.read(tx) if flt.match(adaptor(c))]

    async def list_all(self, namespace: str) -> tuple[builtins.list[Container], int | None]:
        """Every container of ``namespace`` and the database generation they belong to (None
        when a write ran meanwhile): callers may keep what they derive from the list as long
        as ``db.generation`` has not moved on."""

        def tx(conn: sqlite3.Connection) -> builtins.list[Container]:
            rows = conn.execute("SELECT * FROM containers WHERE namespace=? ORDER BY id", (namespace,)).fetchall()
            return [_from_row(r) for r in rows]

        return await self.db.generation_read(tx)

    async def create(self, namespace: str, container: Container, *, batch: bool = False) -> Container:
        """``batch``: group-committed with the batched writes queued with it (``Database.write``)."""
        tx, created = self.create_in(namespace, container)
        await self.db.write(tx, batch=batch)
        return created()

    def create_in(
        self, namespace: str, container: Container
    ) -> tuple[Callable[[sqlite3.Connection], None], Callable[[], Container]]:
        """The create as part of a transaction of another store of the same database (e.g. the
        snapshot the record names, made in the same commit): the function to run inside that
        transaction, and the one to call once it committed (the event; the record as stored)."""
        validate(container)
        c = replace(container, labels=dict(container.labels), extensions=dict(container.extensions))
        c.created_at_ns = c.updated_at_ns = now_ns()

        def tx(conn: sqlite3.Connection) -> None:
            ensure_namespace(conn, namespace)
            if _get(conn, namespace, c.id) is not None:
                raise errdefs.AlreadyExists(f'container "{c.id}": already exists')
            _write_row(conn, namespace, c, insert=True)

        def created() -> Container:
            runtime: dict[str, Any] = {"name": c.runtime_name}
            self._publish(namespace, "/containers/create", {"id": c.id, "image": c.image, "runtime": runtime})
            return c

        return tx, created

    async def update(self, namespace: str, container: Container, paths: Sequence[str] = ()) -> Container:
        if not container.id:
            raise errdefs.InvalidArgument("must specify a container id")

        def tx(conn: sqlite3.Connection) -> Container:
            current = _get(conn, namespace, container.id)
            if current is None:
                raise errdefs.NotFound(f'container "{container.id}": not found')
            updated = apply_update(current, container, paths)
            validate(updated)
            updated.created_at_ns = current.created_at_ns
            updated.updated_at_ns = max(now_ns(), current.updated_at_ns + 1)
            _write_row(conn, namespace, updated, insert=False)
            return updated

        updated = await self.db.write(tx)
        self._publish(
            namespace,
            "/containers/update",
            {
                "id": updated.id,
                "image": updated.image,
                "labels": dict(updated.labels),
                "snapshot_key": updated.snapshot_key,
            },
        )
        return updated

    async def delete(self, namespace: str, container_id: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            cur = conn.execute("DELETE FROM containers WHERE namespace=? AND id=?", (namespace, container_id))
            if cur.rowcount == 0:
                raise errdefs.NotFound(f'container "{container_id}": not found')

        await self.db.write(tx)
        self.db.notify_deleted()
        self._publish(namespace, "/containers/delete", {"id": container_id})
