"""Decoding and encoding of ``config.toml``: both layouts onto the model, validation with messages
naming the file and the key, the legacy translations, and the TOML that ``config default|dump`` print."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from typing import Any
from urllib.parse import urlsplit

from .durations import format_duration, parse_duration
from .model import (
    _LOG_LEVELS,
    _MODELLED_PLUGINS,
    CGROUPS_MONITOR_PLUGIN,
    CRI_PLUGIN,
    DEFAULT_TIMEOUTS,
    FOREIGN_TIMEOUTS,
    GC_PLUGIN,
    KNOWN_PLUGINS,
    LINUX_RUNTIME_PLUGIN,
    OPT_PLUGIN,
    OVERLAYFS_PLUGIN,
    RUNC_TYPES,
    RUNC_V2,
    RUNTIME_V1_LINUX,
    UNTRUSTED_RUNTIME_NAME,
    AuthConfig,
    CgroupsMonitorConfig,
    Config,
    ConfigError,
    CRIConfig,
    GCSchedulerConfig,
    LinuxRuntimeConfig,
    OptConfig,
    OverlayfsConfig,
    RegistryHostConfig,
    RuntimeConfig,
    RuntimeOptions,
    T,
    _default_runtimes,
    _plugin_id,
)

# --- decoding ------------------------------------------------------------------------------


_SECCOMP_NAMES = frozenset({"runtime/default", "docker/default", "unconfined"})
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(path: Iterable[str]) -> str:
    return ".".join(p if _BARE_KEY.fullmatch(p) else json.dumps(p, ensure_ascii=False) for p in path)


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class _Decoder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(f"{self.source}: {message}")

    def error(self, path: tuple[str, ...], problem: str) -> ConfigError:
        key = _dotted(path)
        return ConfigError(f"{self.source}: {key}: {problem}", source=self.source, key=key)

    def table(self, raw: Any, path: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.error(path, f"expected a table, got {_toml_type(raw)}")
        return raw

    def dataclass(self, cls: type[T], raw: Any, path: tuple[str, ...]) -> T:
        table = self.table(raw, path)
        hints = _hints(typing.cast(Any, cls))
        kwargs: dict[str, Any] = {}
        known: set[str] = set()
        extra_field: str | None = None
        for f in fields(cls):  # type: ignore[arg-type]
            meta = f.metadata
            if meta.get("internal") or meta.get("plugin"):
                continue
            if meta.get("extra"):
                extra_field = f.name
                continue
            key = meta.get("key", f.name)
            known.add(key)
            if key not in table or meta.get("manual"):
                continue
            value = self.check_supported(self.value(hints[f.name], table[key], (*path, key), meta), (*path, key), meta)
            if meta.get("merge"):
                default_factory = typing.cast(Any, f.default_factory)
                value = {**default_factory(), **value}
            kwargs[f.name] = value
        extras: dict[str, Any] = {}
        for key, value in table.items():
            if key in known:
                continue
            if extra_field is not None:
                extras[key] = copy.deepcopy(value)
            else:
                self.warn(f"unknown key {_dotted((*path, key))} (ignored)")
        if extra_field is not None:
            kwargs[extra_field] = extras
        return cls(**kwargs)

    def value(self, tp: Any, raw: Any, path: tuple[str, ...], meta: Mapping[str, Any]) -> Any:
        origin = typing.get_origin(tp)
        if tp is Any:
            return copy.deepcopy(raw)
        if origin in (typing.Union, types.UnionType):
            (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
            return self.value(inner, raw, path, meta)
        if origin is tuple:
            if not isinstance(raw, list):
                raise self.error(path, f"expected an array, got {_toml_type(raw)}")
            item_type = typing.get_args(tp)[0]
            return tuple(self.value(item_type, v, (*path, str(i)), {}) for i, v in enumerate(raw))
        if origin is dict:
            value_type = typing.get_args(tp)[1]
            table = self.table(raw, path)
            return {k: self.value(value_type, v, (*path, k), meta) for k, v in table.items()}
        if dataclasses.is_dataclass(tp):
            return self.dataclass(typing.cast(type, tp), raw, path)
        if tp is str:
            if meta.get("as_str") and isinstance(raw, int) and not isinstance(raw, bool):
                return str(raw)
            if not isinstance(raw, str):
                raise self.error(path, f"expected a string, got {_toml_type(raw)} {raw!r}")
            choices = meta.get("choices")
            if choices is not None and raw.lower() not in choices:
                allowed = ", ".join(sorted(c for c in choices if c))
                raise self.error(path, f"invalid value {raw!r} (expected one of {allowed})")
            return raw
        if tp is bool:
            if not isinstance(raw, bool):
                raise self.error(path, f"expected a boolean, got {_toml_type(raw)} {raw!r}")
            return raw
        if tp is int:
            if not isinstance(raw, int) or isinstance(raw, bool):
                raise self.error(path, f"expected an integer, got {_toml_type(raw)} {raw!r}")
            return self.check_range(raw, path, meta)
        if tp is float:
            if meta.get("duration"):
                if not isinstance(raw, str):
                    raise self.error(
                        path, f'expected a duration string like "100ms", got {_toml_type(raw)} {raw!r}'
                    )
                try:
                    seconds = parse_duration(raw)
                except ValueError as exc:
                    raise self.error(path, str(exc)) from None
                return self.check_range(seconds, path, meta, shown=raw)
            if not isinstance(raw, int | float) or isinstance(raw, bool):
                raise self.error(path, f"expected a number, got {_toml_type(raw)} {raw!r}")
            return self.check_range(float(raw), path, meta)
        raise TypeError(f"unsupported config field type {tp!r}")  # a bug in the model

    def check_supported(self, value: T, path: tuple[str, ...], meta: Mapping[str, Any]) -> T:
        """``unsupported`` metadata: (value predicate, why) - an accepted option that we cannot honour."""
        rule = meta.get("unsupported")
        if rule is not None and rule[0](value):
            shown = f"a table with {', '.join(map(repr, value))}" if isinstance(value, dict) else repr(value)
            raise self.error(path, f"{shown} is not supported: {rule[1]}")
        return value

    def check_range(self, value: T, path: tuple[str, ...], meta: Mapping[str, Any], shown: Any = None) -> T:
        lo, hi = meta.get("minimum"), meta.get("maximum")
        show = value if shown is None else shown
        if lo is not None and value < lo:
            raise self.error(path, f"must be >= {lo}, got {show}")
        if hi is not None and value > hi:
            raise self.error(path, f"must be <= {hi}, got {show}")
        return value

    def string(self, raw: Any, path: tuple[str, ...]) -> str:
        return typing.cast(str, self.value(str, raw, path, {}))


def _short_names(known: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for uri in known:
        out.setdefault(_plugin_id(uri), uri)
    return out


_Section = tuple[tuple[str, ...], dict[str, Any]]
"""A plugin table and its key path in the file."""

_PLUGIN_URI = re.compile(r"io\.containerd\.[^.]+\.v\d+\..+")


class _Loader:
    """Maps one parsed TOML document (either layout) onto ``Config``."""

    def __init__(self, data: Mapping[str, Any], source: str, known_plugins: Iterable[str]) -> None:
        self.data = data
        self.dec = _Decoder(source)
        self.known = (*KNOWN_PLUGINS, *known_plugins)
        self.short = _short_names(self.known)

    def load(self) -> Config:
        dec = self.dec
        top = dict(self.data)
        raw_version = top.pop("version", 1)
        if not isinstance(raw_version, int) or isinstance(raw_version, bool) or raw_version not in (1, 2):
            raise dec.error(("version",), f"unsupported config version {raw_version!r} (expected 1 or 2)")
        self.version = raw_version
        raw_plugins = dec.table(top.pop("plugins", {}), ("plugins",))
        base = dec.dataclass(Config, top, ())
        if base.imports:
            dec.warn(
                "imports: importing other config files is not supported; "
                f"{', '.join(base.imports)} not loaded"
            )
        sections, raw = self.split_plugins(raw_plugins)
        linux = self.section(LinuxRuntimeConfig, sections, LINUX_RUNTIME_PLUGIN)
        cfg = replace(
            base,
            disabled_plugins=self.plugin_list(base.disabled_plugins, "disabled_plugins"),
            required_plugins=self.plugin_list(base.required_plugins, "required_plugins"),
            cri=self.cri(sections.get(CRI_PLUGIN), linux),
            gc=self.gc(sections.get(GC_PLUGIN)),
            overlayfs=self.section(OverlayfsConfig, sections, OVERLAYFS_PLUGIN),
            linux=linux,
            opt=self.section(OptConfig, sections, OPT_PLUGIN),
            cgroups_monitor=self.section(CgroupsMonitorConfig, sections, CGROUPS_MONITOR_PLUGIN),
            plugins=raw,
            source=dec.source,
            source_version=self.version,
        )
        self.validate(cfg)
        return replace(cfg, warnings=tuple(dec.warnings))

    def split_plugins(
        self, raw_plugins: dict[str, Any]
    ) -> tuple[dict[str, _Section], dict[str, dict[str, Any]]]:
        """Sort plugin tables into typed sections (by id) and raw ones; warn about unknown ids."""
        typed: dict[str, _Section] = {}
        raw: dict[str, dict[str, Any]] = {}
        for key, table in raw_plugins.items():
            path = ("plugins", key)
            table = self.dec.table(table, path)
            if self.version == 1:
                uri = self.short.get(key)
                if uri is None:
                    hint = (
                        (
                            " (a version 1 config names plugins by short id, e.g. plugins.cri; "
                            "add version = 2 to use full ids)"
                        )
                        if _PLUGIN_URI.fullmatch(key)
                        else ""
                    )
                    self.dec.warn(f"unknown plugin section {_dotted(path)}{hint} (kept as is)")
                    raw[key] = copy.deepcopy(table)
                    continue
            else:
                uri = key
                if uri not in self.known:
                    full = self.short.get(key)
                    hint = (
                        f" (version 2 names plugins by full id: did you mean {_dotted(('plugins', full))}?)"
                        if full
                        else ""
                    )
                    self.dec.warn(f"unknown plugin section {_dotted(path)}{hint} (kept as is)")
                    raw[key] = copy.deepcopy(table)
                    continue
            if uri in _MODELLED_PLUGINS:
                typed[uri] = (path, table)
            else:
                raw[uri] = copy.deepcopy(table)
        return typed, raw

    def section(self, cls: type[T], sections: Mapping[str, _Section], uri: str) -> T:
        if uri not in sections:
            return cls()
        path, table = sections[uri]
        return self.dec.dataclass(cls, table, path)

    def plugin_list(self, names: tuple[str, ...], key: str) -> tuple[str, ...]:
        out: list[str] = []
        for i, name in enumerate(names):
            if self.version == 1:
                if name in self.short:
                    out.append(self.short[name])
                    continue
                if not _PLUGIN_URI.fullmatch(name):
                    self.dec.warn(f"{key}: unknown plugin {name!r} (kept as is)")
                out.append(name)
                continue
            if not _PLUGIN_URI.fullmatch(name):
                raise self.dec.error(
                    (key, str(i)), f"invalid plugin id {name!r} (expected io.containerd.<type>.v<n>.<id>)"
                )
            out.append(name)
        return tuple(out)

    # -- gc: legacy *_ms integers -----------------------------------------------------------

    def gc(self, section: _Section | None) -> GCSchedulerConfig:
        if section is None:
            return GCSchedulerConfig()
        path, table = section
        table = dict(table)
        legacy: dict[str, Any] = {}
        for old, new in (("schedule_delay_ms", "schedule_delay"), ("startup_delay_ms", "startup_delay")):
            if old in table:
                ms = self.dec.value(int, table.pop(old), (*path, old), {"minimum": 0})
                if new not in table:
                    legacy[new] = ms / 1000
                self.dec.warn(f'{_dotted((*path, old))} is deprecated, use {new} = "{ms}ms"')
        return replace(self.dec.dataclass(GCSchedulerConfig, table, path), **legacy)

    # -- CRI and its legacy spellings -------------------------------------------------------

    def cri(self, section: _Section | None, linux: LinuxRuntimeConfig) -> CRIConfig:
        if section is None:
            return CRIConfig()
        dec = self.dec
        path, table = section
        table = dict(table)
        systemd_cgroup = bool(
            dec.value(bool, table.pop("systemd_cgroup", False), (*path, "systemd_cgroup"), {})
        )
        ctd_path = (*path, "containerd")
        ctd = dict(dec.table(table.get("containerd", {}), ctd_path))
        legacy_default = ctd.pop("default_runtime", None)
        legacy_untrusted = ctd.pop("untrusted_workload_runtime", None)
        no_pivot = bool(dec.value(bool, ctd.pop("no_pivot", False), (*ctd_path, "no_pivot"), {}))
        table["containerd"] = ctd
        reg_path = (*path, "registry")
        registry = dict(dec.table(table.get("registry", {}), reg_path))
        legacy_auths = registry.pop("auths", None)
        table["registry"] = registry

        cri = dec.dataclass(CRIConfig, table, path)
        containerd = cri.containerd
        unset = cri.unset_seccomp_profile
        if unset and unset not in _SECCOMP_NAMES and not (
            unset.startswith("localhost/") and os.path.isabs(unset.removeprefix("localhost/"))
        ):
            # containerd reads it at each pod and container without one and fails them all; said once here
            raise dec.error(
                (*path, "unset_seccomp_profile"),
                f"invalid seccomp profile {unset!r}: expected runtime/default, docker/default, unconfined "
                "or localhost/<absolute path>",
            )

        runtimes_path = (*ctd_path, "runtimes")
        runtimes_raw = dec.table(ctd.get("runtimes", {}), runtimes_path)
        runtimes = _default_runtimes()
        from_v1: set[str] = set()
        for name, rt in runtimes_raw.items():
            runtimes[name], was_v1 = self.runtime(rt, (*runtimes_path, name), linux)
            if was_v1:
                from_v1.add(name)
        for legacy_key, raw_rt, name in (
            ("default_runtime", legacy_default, containerd.default_runtime_name),
            ("untrusted_workload_runtime", legacy_untrusted, UNTRUSTED_RUNTIME_NAME),
        ):
            if raw_rt is None:
                continue
            lpath = (*ctd_path, legacy_key)
            if not _runtime_is_set(dec.table(raw_rt, lpath)):
                continue
            if name in runtimes_raw:
                raise dec.error(
                    lpath,
                    f"conflicting definitions: both {legacy_key} and "
                    f"{_dotted((*runtimes_path, name))} are set",
                )
            runtimes[name], was_v1 = self.runtime(raw_rt, lpath, linux)
            if was_v1:
                from_v1.add(name)
            dec.warn(f"{_dotted(lpath)} is deprecated; used as {_dotted((*runtimes_path, name))}")

        default_name = containerd.default_runtime_name
        if default_name not in runtimes:
            raise dec.error(
                (*ctd_path, "default_runtime_name"),
                f"no runtime {default_name!r} configured in {_dotted(runtimes_path)}",
            )
        for flag, value, attr, opt_key in (
            ("systemd_cgroup", systemd_cgroup, "systemd_cgroup", "SystemdCgroup"),
            ("containerd.no_pivot", no_pivot, "no_pivot_root", "NoPivotRoot"),
        ):
            if not value:
                continue
            rt = runtimes[default_name]
            flags: dict[str, Any] = {attr: True}
            runtimes[default_name] = replace(rt, options=replace(rt.options, **flags))
            if default_name not in from_v1:
                dec.warn(
                    f"{_dotted((*path, *flag.split('.')))} is deprecated; set "
                    f"{_dotted((*runtimes_path, default_name, 'options', opt_key))} = true instead"
                )

        reg = cri.registry
        if legacy_auths is not None:
            configs = dict(reg.configs)
            auths_path = (*reg_path, "auths")
            for url, raw_auth in dec.table(legacy_auths, auths_path).items():
                auth = dec.dataclass(AuthConfig, raw_auth, (*auths_path, url))
                host = urlsplit(url).netloc or url
                existing = configs.get(host, RegistryHostConfig())
                if existing.auth is None:
                    configs[host] = replace(existing, auth=auth)
                dec.warn(
                    f"{_dotted((*auths_path, url))} is deprecated; use "
                    f"{_dotted((*reg_path, 'configs', host, 'auth'))}"
                )
            reg = replace(reg, configs=configs)
        if reg.config_path:
            if reg.mirrors:
                raise dec.error((*reg_path, "mirrors"), "cannot be set when config_path is set")
            if any(c.tls is not None for c in reg.configs.values()):
                raise dec.error((*reg_path, "configs"), "tls cannot be set when config_path is set")
        return replace(cri, containerd=replace(containerd, runtimes=runtimes), registry=reg)

    def runtime(
        self, raw: Any, path: tuple[str, ...], linux: LinuxRuntimeConfig
    ) -> tuple[RuntimeConfig, bool]:
        """Decode one runtime table; returns it and whether it was a v1 linux runtime."""
        dec = self.dec
        table = dict(dec.table(raw, path))
        engine = dec.string(table.pop("runtime_engine", ""), (*path, "runtime_engine"))
        root = dec.string(table.pop("runtime_root", ""), (*path, "runtime_root"))
        rt = dec.dataclass(RuntimeConfig, table, path)
        was_v1 = rt.runtime_type == RUNTIME_V1_LINUX
        rtype = RUNC_V2 if was_v1 else rt.runtime_type
        if was_v1:
            dec.warn(
                f"{_dotted((*path, 'runtime_type'))}: {RUNTIME_V1_LINUX} is not supported; using {RUNC_V2}"
            )
        opts_path = (*path, "options")
        opts_table = dec.table(table.get("options", {}), opts_path)
        if rtype in RUNC_TYPES:
            options = dec.dataclass(RuntimeOptions, opts_table, opts_path)
            for key in options.extra:
                dec.warn(f"unknown key {_dotted((*opts_path, key))} (ignored)")
            options = replace(options, extra={})
        else:
            for key in opts_table:
                if key not in ("TypeUrl", "ConfigPath"):
                    raise dec.error(
                        (*opts_path, key),
                        f"is not supported: the options of a {rtype} runtime are runtimeoptions.v1.Options "
                        "(TypeUrl, ConfigPath)",
                    )
            options = RuntimeOptions(extra=copy.deepcopy(opts_table))
        if not engine and was_v1 and linux.runtime not in ("", "runc"):
            engine = linux.runtime
        if not root and was_v1:
            root = linux.runtime_root
        for legacy_key, value, attr, opt_key in (
            ("runtime_engine", engine, "binary_name", "BinaryName"),
            ("runtime_root", root, "root", "Root"),
        ):
            if not value:
                continue
            current = getattr(options, attr)
            if current and current != value:
                raise dec.error(
                    (*path, legacy_key), f"conflicts with {_dotted((*opts_path, opt_key))} = {current!r}"
                )
            change: dict[str, Any] = {attr: value}
            options = replace(options, **change)
            if legacy_key in raw:
                dec.warn(
                    f"{_dotted((*path, legacy_key))} is deprecated; used as {_dotted((*opts_path, opt_key))}"
                )
        return replace(rt, runtime_type=rtype, options=options), was_v1

    def validate(self, cfg: Config) -> None:
        dec = self.dec
        if cfg.temp and not os.path.isabs(cfg.temp):
            raise dec.error(("temp",), f"must be an absolute path, got {cfg.temp!r}")
        for key in ("root", "state"):
            value = getattr(cfg, key)
            if not value:
                raise dec.error((key,), "must not be empty")
            if not os.path.isabs(value):
                raise dec.error((key,), f"must be an absolute path, got {value!r}")
        if os.path.normpath(cfg.root) == os.path.normpath(cfg.state):
            raise dec.error(("state",), f"root and state must be different paths, both are {cfg.root!r}")
        if not cfg.grpc.address:
            raise dec.error(("grpc", "address"), "must not be empty")
        for key, seconds in cfg.timeouts.items():
            if key in DEFAULT_TIMEOUTS:
                continue
            path = ("timeouts", key)
            foreign = FOREIGN_TIMEOUTS.get(key)
            if foreign is None:
                known = ", ".join(sorted(DEFAULT_TIMEOUTS))
                raise dec.error(path, f"unknown timeout (the timeouts this daemon honours: {known})")
            default, why = foreign
            if seconds != default:
                raise dec.error(path, f"{format_duration(seconds)!r} is not supported: {why} "
                                      f"(only containerd's default {format_duration(default)!r} is accepted)")


def _runtime_is_set(table: Mapping[str, Any]) -> bool:
    """Whether a legacy runtime table says anything (containerd's defaults print it empty)."""
    return any(v not in ("", None, [], {}, False, 0) for v in table.values())


# --- encoding ------------------------------------------------------------------------------


def _encode_value(value: Any, meta: Mapping[str, Any]) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode(value)
    if isinstance(value, dict):
        return {k: _encode_value(v, meta) for k, v in value.items() if v is not None}
    if isinstance(value, tuple | list):
        return [_encode_value(v, {}) for v in value]
    if isinstance(value, float) and meta.get("duration"):
        return format_duration(value)
    return copy.deepcopy(value)


def _encode(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(obj):
        meta = f.metadata
        if meta.get("internal") or meta.get("plugin"):
            continue
        value = getattr(obj, f.name)
        if meta.get("extra"):
            out.update(copy.deepcopy(value))
            continue
        if value is None:
            continue
        if isinstance(obj, RuntimeConfig) and f.name == "options" and obj.runtime_type not in RUNC_TYPES:
            out["options"] = copy.deepcopy(value.extra)
            continue
        out[meta.get("key", f.name)] = _encode_value(value, meta)
    return out


def _to_document(cfg: Config) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": 2}
    doc.update(_encode(cfg))
    plugins: dict[str, Any] = {}
    for uri, attr in _MODELLED_PLUGINS.items():
        plugins[uri] = _encode(getattr(cfg, attr))
    for key, table in cfg.plugins.items():
        plugins[key] = copy.deepcopy(table)
    doc["plugins"] = dict(sorted(plugins.items()))
    return doc


# --- public entry points -----------------------------------------------------------------


def config_from_dict(
    data: Mapping[str, Any], source: str = "<config>", *, known_plugins: Iterable[str] = ()
) -> Config:
    """Build the model from a parsed TOML document (either layout)."""
    return _Loader(data, source, known_plugins).load()


def parse_config(text: str, source: str = "<config>", *, known_plugins: Iterable[str] = ()) -> Config:
    """Parse config.toml text; ``source`` names it in messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            f"{source}: invalid TOML: {exc}", source=source, line=int(m.group(1)) if m else None
        ) from exc
    return config_from_dict(data, source, known_plugins=known_plugins)


def load_config(
    path: str | os.PathLike[str], *, missing_ok: bool = False, known_plugins: Iterable[str] = ()
) -> tuple[Config, list[str]]:
    """Load a config file; returns the model and its warnings (also in ``Config.warnings``).

    A missing file is an error unless ``missing_ok`` (then the defaults are returned).
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError as exc:
        if missing_ok:
            return Config(source=None), []
        raise ConfigError(f"{source}: config file not found", source=source) from exc
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror or exc}", source=source) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not valid UTF-8: {exc}", source=source) from exc
    cfg = parse_config(text, source, known_plugins=known_plugins)
    return cfg, list(cfg.warnings)


def with_overrides(
    cfg: Config,
    *,
    root: str | None = None,
    state: str | None = None,
    address: str | None = None,
    log_level: str | None = None,
) -> Config:
    """Apply command-line overrides (``--root``, ``--state``, ``--address``, ``--log-level``)."""
    changes: dict[str, Any] = {}
    if root is not None:
        changes["root"] = os.path.abspath(root)
    if state is not None:
        changes["state"] = os.path.abspath(state)
    if address is not None:
        changes["grpc"] = replace(cfg.grpc, address=address)
    if log_level is not None:
        if log_level.lower() not in _LOG_LEVELS:
            allowed = ", ".join(sorted(lv for lv in _LOG_LEVELS if lv))
            raise ConfigError(
                f"--log-level: invalid value {log_level!r} (expected one of {allowed})", key="debug.level"
            )
        changes["debug"] = replace(cfg.debug, level=log_level)
    out = replace(cfg, **changes)
    if os.path.normpath(out.root) == os.path.normpath(out.state):
        raise ConfigError(f"root and state must be different paths, both are {out.root!r}", key="state")
    return out


_HEADER = "# pycontainerd configuration (containerd config.toml, version 2 layout)\n"


def dump_config_toml(cfg: Config) -> str:
    """The effective configuration as a version-2 config.toml (``pycontainerd config dump``)."""
    import tomli_w  # `config dump` and `config default` only

    return _HEADER + tomli_w.dumps(_to_document(cfg))


def default_config_toml() -> str:
    """The complete default configuration (``pycontainerd config default``)."""
    return dump_config_toml(Config())
