"""``services.tables``: the static method tables the daemon serves its services from (so that it
needs no protobuf until a call does) say what the generated descriptors say, and every service a
servicer module serves from a deferred module has one."""

from __future__ import annotations

import importlib
import pkgutil
import types

from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2

import pycontainerd.api.services
from pycontainerd.rpc.methods import table_of
from pycontainerd.services import (
    common,
    containers,
    content,
    diff,
    events,
    health,
    images,
    introspection,
    leases,
    namespaces,
    snapshots,
    tasks,
    version,
)
from pycontainerd.services.tables import SERVICES


def _import_generated_services() -> None:
    for info in pkgutil.walk_packages(pycontainerd.api.services.__path__, "pycontainerd.api.services."):
        if info.name.endswith("_pb2"):
            importlib.import_module(info.name)
    assert health_pb2.DESCRIPTOR.services_by_name["Health"]


def test_each_static_table_is_what_its_descriptor_says() -> None:
    _import_generated_services()
    pool = descriptor_pool.Default()
    for name, methods in SERVICES.items():
        assert table_of(pool.FindServiceByName(name)) == list(methods), name


def test_every_service_served_from_a_deferred_module_has_a_static_table() -> None:
    """The servicer modules' generated modules with services (deferred: ``add_servicer`` serves
    them from ``SERVICES``) name exactly the services in ``SERVICES``."""
    served = set()
    for mod in (containers, content, diff, events, health, images, introspection, leases, namespaces, snapshots,
                tasks, version):
        for alias, value in list(vars(mod).items()):
            if isinstance(value, common.DeferredModule):
                assert value.deferred_package or not value.DESCRIPTOR.services_by_name, (mod.__name__, alias)
            elif not (isinstance(value, types.ModuleType) and hasattr(value, "DESCRIPTOR")):
                continue  # not a generated module (one used already took its proxy's place)
            served |= {s.full_name for s in value.DESCRIPTOR.services_by_name.values()}
    assert served == set(SERVICES)
