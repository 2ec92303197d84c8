"""The plugin loader: a plugin's config section is decoded once into the dataclass its
Registration names and reaches ``init`` typed; a bad value stops the start-up naming the
file and the key; unknown keys are warnings; peers are reached only through declared
``requires`` and come typed."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.config import Config, ConfigError, parse_config
from pycontainerd.plugin import InitContext, Registration
from pycontainerd.plugin import registry as plugin_registry

SRC = "/etc/pycd/config.toml"


@dataclass(frozen=True)
class WidgetConfig:
    size: int = field(default=1, metadata={"minimum": 1})
    name: str = "w"
    flags: tuple[str, ...] = ()


class Widget:
    def __init__(self, cfg: WidgetConfig) -> None:
        self.cfg = cfg


def _load(cfg: Config, regs: list[Registration], **kw: Any) -> plugin_registry.PluginSet:
    warnings: list[str] = []

    def plugin_config(reg: Registration) -> Any:
        value, w = cfg.plugin_config(reg.uri, reg.config)
        warnings.extend(w)
        return value

    out = asyncio.run(
        plugin_registry.load(regs, root=Path("/nonexistent"), state=Path("/nonexistent"),
                             plugin_config=plugin_config, daemon=None, **kw)
    )
    out.warnings = warnings  # type: ignore[attr-defined]
    return out


async def _init_widget(ctx: InitContext) -> Widget:
    return Widget(ctx.typed_config(WidgetConfig))


WIDGET = Registration(type="io.test.widget.v1", id="w", init=_init_widget, config=WidgetConfig)


def test_typed_config_reaches_init() -> None:
    cfg = parse_config(
        'version = 2\n[plugins."io.test.widget.v1.w"]\nsize = 7\nflags = ["a", "b"]\n',
        SRC, known_plugins=[WIDGET.uri],
    )
    plugins = _load(cfg, [WIDGET])
    w = plugins.get("io.test.widget.v1", "w")
    assert isinstance(w, Widget)
    assert w.cfg == WidgetConfig(size=7, name="w", flags=("a", "b"))


def test_defaults_without_a_section() -> None:
    plugins = _load(parse_config("version = 2\n", SRC), [WIDGET])
    assert plugins.get("io.test.widget.v1", "w").cfg == WidgetConfig()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('size = "big"', 'size: expected an integer, got string'),
        ("size = 0", "size: must be >= 1, got 0"),
        ('flags = "a"', "flags: expected an array"),
    ],
)
def test_a_bad_value_names_file_and_key_and_nothing_starts(body: str, problem: str) -> None:
    cfg = parse_config(f'version = 2\n[plugins."io.test.widget.v1.w"]\n{body}\n', SRC, known_plugins=[WIDGET.uri])
    started: list[str] = []

    async def init_other(ctx: InitContext) -> object:
        started.append(ctx.registration.uri)
        return object()

    other = Registration(type="io.test.other.v1", id="o", init=init_other)
    with pytest.raises(ConfigError) as exc:
        _load(cfg, [other, WIDGET])
    assert str(exc.value) == f'{SRC}: plugins."io.test.widget.v1.w".{problem}' or (
        str(exc.value).startswith(f'{SRC}: plugins."io.test.widget.v1.w".{problem}')
    )
    assert started == []  # configs are decoded before any plugin starts


def test_a_disabled_plugin_config_is_not_decoded() -> None:
    cfg = parse_config('version = 2\n[plugins."io.test.widget.v1.w"]\nsize = 0\n', SRC, known_plugins=[WIDGET.uri])
    plugins = _load(cfg, [WIDGET], disabled=[WIDGET.uri])
    assert plugins.get_all("io.test.widget.v1") == {}


def test_unknown_keys_are_warnings_naming_them() -> None:
    cfg = parse_config(
        'version = 2\n[plugins."io.test.widget.v1.w"]\nsize = 2\ncolour = "red"\n'
        '[plugins."io.test.other.v1.o"]\nanything = 1\n',
        SRC, known_plugins=[WIDGET.uri, "io.test.other.v1.o"],
    )

    async def init_other(ctx: InitContext) -> object:
        assert ctx.config is None
        return object()

    other = Registration(type="io.test.other.v1", id="o", init=init_other)
    plugins = _load(cfg, [WIDGET, other])
    assert plugins.get("io.test.widget.v1", "w").cfg.size == 2
    warnings = plugins.warnings  # type: ignore[attr-defined]
    assert any('plugins."io.test.widget.v1.w".colour' in w and "unknown key" in w for w in warnings)
    assert any('plugins."io.test.other.v1.o".anything' in w and "takes no configuration" in w for w in warnings)


def test_unknown_plugin_section_is_a_warning() -> None:
    cfg = parse_config('version = 2\n[plugins."io.containerd.nothing.v1.here"]\nx = 1\n', SRC)
    assert any('plugins."io.containerd.nothing.v1.here"' in w and "unknown plugin section" in w for w in cfg.warnings)


def test_modelled_sections_come_as_loaded() -> None:
    from pycontainerd.config import GCSchedulerConfig, OverlayfsConfig

    cfg = parse_config(
        'version = 2\n[plugins."io.containerd.gc.v1.scheduler"]\ndeletion_threshold = 3\nschedule_delay = "25ms"\n'
        '[plugins."io.containerd.snapshotter.v1.overlayfs"]\nmount_options = ["nodev"]\n',
        SRC,
    )
    gc, _ = cfg.plugin_config("io.containerd.gc.v1.scheduler", GCSchedulerConfig)
    assert gc == GCSchedulerConfig(deletion_threshold=3, schedule_delay=0.025)
    ov, _ = cfg.plugin_config("io.containerd.snapshotter.v1.overlayfs", OverlayfsConfig)
    assert ov == OverlayfsConfig(mount_options=("nodev",))


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[plugins."io.containerd.snapshotter.v1.overlayfs"]\nslow_chown = true\n',
         'plugins."io.containerd.snapshotter.v1.overlayfs".slow_chown'),
        ('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\nShimCgroup = "/shims"\n',
         'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options.ShimCgroup'),
        ('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\nCriuPath = "/usr/sbin/criu"\n',
         'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options.CriuPath'),
        ('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\nCriuImagePath = "/x"\n',
         'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options.CriuImagePath'),
        ('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\nCriuWorkPath = "/x"\n',
         'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options.CriuWorkPath'),
    ],
)
def test_options_we_cannot_honour_are_refused_naming_the_key(toml: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config("version = 2\n" + toml, SRC)
    assert str(exc.value).startswith(f"{SRC}: {key}: ")
    assert "not supported" in str(exc.value)


def test_their_defaults_are_accepted() -> None:
    parse_config(
        'version = 2\n[plugins."io.containerd.snapshotter.v1.overlayfs"]\nslow_chown = false\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\nShimCgroup = ""\nCriuPath = ""\n',
        SRC,
    )


# -- peers ------------------------------------------------------------------------------------------
async def _init_user(ctx: InitContext) -> object:
    return ctx.require(Widget, "io.test.widget.v1", "w")


def test_require_gives_the_typed_instance() -> None:
    user = Registration(type="io.test.user.v1", id="u", init=_init_user, requires=("io.test.widget.v1",))
    plugins = _load(Config(), [user, WIDGET])  # order follows requires
    assert isinstance(plugins.get("io.test.user.v1", "u"), Widget)


def test_undeclared_peers_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    user = Registration(type="io.test.user.v1", id="u", init=_init_user)  # no requires
    with caplog.at_level(logging.WARNING, "pycontainerd.plugin"):
        plugins = _load(Config(), [WIDGET, user])
    with pytest.raises(errdefs.NotFound, match="without requiring them"):
        plugins.get("io.test.user.v1", "u")


def test_require_checks_the_kind() -> None:
    async def init(ctx: InitContext) -> object:
        return ctx.require(str, "io.test.widget.v1", "w")

    user = Registration(type="io.test.user.v1", id="u", init=init, requires=("io.test.widget.v1",))
    plugins = _load(Config(), [WIDGET, user])
    with pytest.raises(errdefs.NotFound, match="not the str"):
        plugins.get("io.test.user.v1", "u")


def test_optional_is_none_when_the_peer_is_disabled_or_skipped() -> None:
    seen: list[object] = []

    async def init(ctx: InitContext) -> object:
        seen.append(ctx.optional(Widget, "io.test.widget.v1", "w"))
        return object()

    user = Registration(type="io.test.user.v1", id="u", init=init, requires=("io.test.widget.v1",))
    _load(Config(), [WIDGET, user], disabled=[WIDGET.uri])

    async def skip(ctx: InitContext) -> object:
        raise plugin_registry.SkipPlugin("not here")

    skipped = Registration(type="io.test.widget.v1", id="w", init=skip)
    _load(Config(), [skipped, user])
    _load(Config(), [WIDGET, user])
    assert seen[0] is None and seen[1] is None and isinstance(seen[2], Widget)


def test_diff_service_differs() -> None:
    from pycontainerd.services.diff import DiffServiceConfig

    uri = "io.containerd.service.v1.diff-service"
    ok = parse_config(f'version = 2\n[plugins."{uri}"]\ndefault = ["walking"]\n', SRC)
    assert ok.plugin_config(uri, DiffServiceConfig) == (DiffServiceConfig(("walking",)), [])
    bad = parse_config(f'version = 2\n[plugins."{uri}"]\ndefault = ["windows-lcow", "walking"]\n', SRC)
    with pytest.raises(ConfigError, match=r'diff-service"\.default: .* is not supported: the walking differ'):
        bad.plugin_config(uri, DiffServiceConfig)
