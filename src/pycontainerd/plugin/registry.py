"""Plugin registrations, the init context, and the loader.

A plugin is a ``Registration``: a type (``io.containerd.snapshotter.v1``), an id
(``overlayfs``), the types it requires, and an async ``init(ctx)`` returning the plugin's
instance.  ``daemon/builtins.py`` holds the one explicit list; the loader orders it
topologically (a plugin comes after every plugin of each type it requires, ``*`` meaning
all), gives each its own ``root/<type>.<id>`` and ``state/<type>.<id>`` directories and
its configuration, and records the outcome: ok, skipped (``SkipPlugin``: this plugin
cannot run here, e.g. btrfs on ext4) or error.  A failed plugin is fatal only when listed
in ``required_plugins``; plugins that require it fail in turn with a message saying why.

Configuration: a plugin that takes one names its dataclass in ``Registration.config``.  The
loader asks the daemon for that plugin's section decoded into it (``plugin_config``), once,
before ``init``; a section that does not decode (a wrong type, a value out of range, an
option we do not support) stops the start-up with a ``ConfigError`` naming the file and
the key, as containerd refuses a plugin config it cannot decode.  ``init`` gets the
instance as ``ctx.config`` (``ctx.typed_config(Cls)`` to have it typed).

Dependencies: a plugin reaches other plugins only through ``ctx.get``/``ctx.get_all`` (or
the typed ``ctx.require``/``ctx.optional``), and only those of the types it declares in
``requires``; asking for another type is a programming error (``FailedPrecondition``),
so ``requires`` is the whole truth about what a plugin uses (and the load order follows
it).
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .. import errdefs

log = logging.getLogger("pycontainerd.plugin")

T = TypeVar("T")


class SkipPlugin(Exception):
    """Raised by ``init`` when the plugin cannot run on this host; the daemon goes on."""


@dataclass(frozen=True)
class Registration:
    type: str
    id: str
    init: Callable[[InitContext], Awaitable[Any]]
    requires: tuple[str, ...] = ()
    # what ``Introspection.Plugins`` reports beside the id
    capabilities: tuple[str, ...] = ()
    # the dataclass the plugin's config section decodes into (None: the plugin takes none)
    config: builtins.type | None = None

    @property
    def uri(self) -> str:
        return f"{self.type}.{self.id}"


@dataclass
class Plugin:
    registration: Registration
    instance: Any = None
    error: BaseException | None = None
    exports: dict[str, str] = field(default_factory=dict)
    platforms: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.error is None:
            return "ok"
        return "skip" if isinstance(self.error, SkipPlugin) else "error"

    @property
    def init_error_message(self) -> str:
        if self.error is None:
            return ""
        if isinstance(self.error, SkipPlugin):
            # ctr shows "skip" when the message contains "skip plugin"
            return f"skip plugin: {self.error}"
        return str(self.error)


class PluginSet:
    """The initialised plugins, queried by type and id."""

    def __init__(self) -> None:
        self.plugins: list[Plugin] = []

    def add(self, plugin: Plugin) -> None:
        self.plugins.append(plugin)

    def get(self, type_: str, id_: str | None = None) -> Any:
        """The instance of a loaded plugin; NotFound when missing or not ok."""
        for p in self.plugins:
            if p.registration.type == type_ and (id_ is None or p.registration.id == id_):
                if p.error is not None:
                    raise errdefs.NotFound(f"plugin {p.registration.uri} is not available: {p.init_error_message}")
                return p.instance
        raise errdefs.NotFound(f"no plugin {type_}{'.' + id_ if id_ else ''}")

    def get_all(self, type_: str) -> dict[str, Any]:
        return {
            p.registration.id: p.instance
            for p in self.plugins
            if p.registration.type == type_ and p.error is None
        }


@dataclass
class InitContext:
    """What a plugin's ``init`` gets: its dirs, its decoded config, the daemon and its peers."""

    registration: Registration
    root: Path
    state: Path
    config: Any  # an instance of ``registration.config`` (None when it has no config class)
    plugins: PluginSet
    daemon: Any  # pycontainerd.daemon.server.Daemon; typed Any to keep plugins import-light
    exports: dict[str, str] = field(default_factory=dict)

    def _declared(self, type_: str) -> None:
        reqs = self.registration.requires
        if type_ not in reqs and "*" not in reqs:
            raise errdefs.FailedPrecondition(
                f"plugin {self.registration.uri} uses {type_} plugins without requiring them"
            )

    def get(self, type_: str, id_: str | None = None) -> Any:
        self._declared(type_)
        return self.plugins.get(type_, id_)

    def get_all(self, type_: str) -> dict[str, Any]:
        self._declared(type_)
        return self.plugins.get_all(type_)

    def require(self, kind: type[T], type_: str, id_: str | None = None) -> T:
        """The instance of a required plugin, checked to be a ``kind``."""
        instance = self.get(type_, id_)
        if not isinstance(instance, kind):
            raise errdefs.FailedPrecondition(
                f"plugin {type_}{'.' + id_ if id_ else ''} is a {type(instance).__name__}, "
                f"not the {kind.__name__} {self.registration.uri} needs"
            )
        return instance

    def optional(self, kind: type[T], type_: str, id_: str | None = None) -> T | None:
        """Like ``require``, but None when no such plugin is loaded (disabled or skipped)."""
        self._declared(type_)
        for p in self.plugins.plugins:
            if p.registration.type == type_ and (id_ is None or p.registration.id == id_):
                if isinstance(p.error, SkipPlugin):
                    return None
                return self.require(kind, type_, id_)
        return None

    def typed_config(self, kind: type[T]) -> T:
        """``config`` as the dataclass named in the registration."""
        if not isinstance(self.config, kind):
            raise TypeError(
                f"plugin {self.registration.uri}: config is {type(self.config).__name__}, not {kind.__name__}"
            )
        return self.config


def order(registrations: Sequence[Registration]) -> list[Registration]:
    """Topological order: every plugin after the plugins of the types it requires."""
    ordered: list[Registration] = []
    placed: set[str] = set()
    remaining = list(registrations)

    def deps(r: Registration) -> Iterable[Registration]:
        for req in r.requires:
            for other in registrations:
                if other is r:
                    continue
                if req == "*" or other.type == req:
                    if req == "*" and "*" in other.requires:
                        continue
                    yield other

    visiting: set[str] = set()

    def visit(r: Registration) -> None:
        if r.uri in placed:
            return
        if r.uri in visiting:
            raise errdefs.FailedPrecondition(f"plugin dependency cycle at {r.uri}")
        visiting.add(r.uri)
        for d in deps(r):
            visit(d)
        visiting.discard(r.uri)
        placed.add(r.uri)
        ordered.append(r)

    for r in remaining:
        visit(r)
    return ordered


async def load(
    registrations: Sequence[Registration],
    *,
    root: Path,
    state: Path,
    plugin_config: Callable[[Registration], Any],
    daemon: Any,
    disabled: Iterable[str] = (),
    required: Iterable[str] = (),
) -> PluginSet:
    """Initialise ``registrations`` in dependency order.

    ``plugin_config(reg)`` returns the plugin's decoded config (an instance of
    ``reg.config``, or None); it raises ``ConfigError`` for a section that does not decode,
    which stops the loading: a configured option either works or the daemon refuses to start.
    """
    disabled_set, required_set = set(disabled), set(required)
    plugins = PluginSet()
    # decode every enabled plugin's section first: a bad option fails before anything starts
    configs = {reg.uri: plugin_config(reg) for reg in registrations if reg.uri not in disabled_set}
    for reg in order(registrations):
        if reg.uri in disabled_set:
            log.info("plugin %s disabled by config", reg.uri)
            continue
        plugin = Plugin(reg)
        plugins.add(plugin)
        failed_dep = next(
            (
                p
                for p in plugins.plugins
                if p is not plugin and p.error is not None and not isinstance(p.error, SkipPlugin)
                and p.registration.type in reg.requires
                and not plugins.get_all(p.registration.type)
            ),
            None,
        )
        if failed_dep is not None:
            plugin.error = errdefs.FailedPrecondition(
                f"required plugin {failed_dep.registration.uri} failed: {failed_dep.init_error_message}"
            )
            continue
        ctx = InitContext(
            registration=reg,
            root=root / reg.uri,
            state=state / reg.uri,
            config=configs[reg.uri],
            plugins=plugins,
            daemon=daemon,
        )
        try:
            plugin.instance = await reg.init(ctx)
            plugin.exports = dict(ctx.exports)
            log.debug("loaded plugin %s", reg.uri)
        except SkipPlugin as exc:
            plugin.error = exc
            log.info("skip loading plugin %s: %s", reg.uri, exc)
        except Exception as exc:
            plugin.error = exc
            log.warning("failed to load plugin %s: %s", reg.uri, exc)
            if reg.uri in required_set:
                raise errdefs.FailedPrecondition(f"required plugin {reg.uri} failed to load: {exc}") from exc
    return plugins
