"""Pod networking through CNI plugins: setup, check, teardown (the async shell).

Theory of operation.  A :class:`CNI` reads its networks from ``conf_dir`` on every call
(containerd watches the directory and reloads; reading one small file is cheaper than a
watcher and never stale): containerd's loopback network as ``lo``, then the first
``max_conf_num`` config files as ``eth0``, ``eth1``...

``setup`` (ADD) runs, network after network, each plugin of the list in order, handing each
the previous one's result as ``prevResult``; the last result is the network's.  Before a
network is added its *cache entry* is written (config, CNI_ARGS, capability args, no result
yet) and after it the result is added, under ``<cache_dir>/results/<network>-<id>-<ifname>``
(libcni's layout).  So ``teardown`` (DEL) always has what it needs, even after a daemon
restart or a config change: the networks of the current config plus any network a cache
entry names for the sandbox; each list's plugins in reverse order, each given the cached
result; errors do not stop the others (best effort), and a cache entry goes only once its
DEL succeeded, so a retry still finds it.  When ADD fails, everything is deleted again
before the error is raised, as containerd's RunPodSandbox does: nothing is left half-made.

``check`` (CHECK, cniVersion >= 0.4.0 and not ``disableCheck``) runs every plugin with the
cached result.  ``status`` is the CRI's NetworkReady: a config is there and every plugin it
names is found.  ``describe`` is what a verbose CRI Status shows of it (go-cni's ``GetConfig``
and whether the config loads, containerd's ``cniconfig`` and ``lastCNILoadStatus``).

The pod IP is chosen as containerd does: among the IPs of ``eth0``, the first IPv4 (or IPv6
with ``ip_pref = "ipv6"``, or just the first with ``"cni"``); the others are the additional
IPs.  All blocking file work runs in worker threads; plugins run through
:func:`.invoke.exec_plugin`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .. import errdefs, fsmodes
from .config import (
    Network,
    NetworkConfigList,
    limit_conf_files,
    networks_from,
    parse_conflist,
    parse_file,
    version_at_least,
)
from .invoke import (
    ADD,
    CHECK,
    DEL,
    CapabilityArgs,
    Invocation,
    PluginNotFound,
    build_env,
    exec_plugin,
    find_plugin,
    k8s_args,
    plugin_stdin,
)
from .result import IPConfig, Result, all_ips, parse_result

log = logging.getLogger(__name__)

DEFAULT_IFNAME = "eth0"
DEFAULT_PLUGIN_TIMEOUT = 120.0
CACHE_KIND = "cniCacheV1"


@dataclass(frozen=True)
class PodNetwork:
    """The pod a call is about: its sandbox id, netns path, identity and capability args."""

    sandbox_id: str
    netns: str
    namespace: str = ""
    name: str = ""
    uid: str = ""
    capabilities: CapabilityArgs = field(default_factory=CapabilityArgs)
    extra_args: tuple[tuple[str, str], ...] = ()  # appended to Kubernetes' CNI_ARGS

    def cni_args(self) -> tuple[tuple[str, str], ...]:
        return k8s_args(
            namespace=self.namespace, name=self.name, sandbox_id=self.sandbox_id, uid=self.uid, extra=self.extra_args
        )


@dataclass(frozen=True)
class Attachment:
    """One network attached to the pod: its name, interface and the list's result."""

    network: str
    ifname: str
    result: Result


@dataclass(frozen=True)
class SetupResult:
    """The pod's networking after ``setup``."""

    pod_ip: str
    additional_ips: tuple[str, ...]
    attachments: tuple[Attachment, ...]

    @property
    def ips(self) -> list[tuple[str, IPConfig]]:
        """Every IP inside the pod, with its interface name."""
        return all_ips([(a.ifname, a.result) for a in self.attachments])


def select_pod_ips(ips: Sequence[IPConfig], preference: str = "") -> tuple[str, tuple[str, ...]]:
    """containerd's choice of the pod IP among ``eth0``'s IPs; (pod IP, additional IPs)."""
    if not ips:
        raise errdefs.FailedPrecondition(f"CNI gave no IP address for {DEFAULT_IFNAME}")
    strs = [str(ip.ip) for ip in ips]
    want = {"ipv6": 6, "cni": 0}.get(preference, 4)
    if want:
        for i, ip in enumerate(ips):
            if ip.version == want:
                return strs[i], tuple(strs[:i] + strs[i + 1 :])
    return strs[0], tuple(strs[1:])


class PodNetworking(Protocol):
    """What the CRI plugin needs of pod networking (:class:`CNI` is the implementation).

    Lifecycle, as containerd's RunPodSandbox / StopPodSandbox / Status use it: ``status``
    before pods are admitted (NetworkReady); ``setup`` after the pod's netns exists and
    before its sandbox starts; ``teardown`` when the sandbox stops (again on retries: it is
    idempotent), before the netns is removed; ``check`` on demand."""

    async def status(self) -> None: ...

    async def setup(self, pod: PodNetwork) -> SetupResult: ...

    async def check(self, pod: PodNetwork) -> None: ...

    async def teardown(self, pod: PodNetwork) -> None: ...


# --- the result cache (blocking helpers, run in threads) -------------------------------------


@dataclass(frozen=True)
class CacheEntry:
    container_id: str
    ifname: str
    network: str
    config: NetworkConfigList
    netns: str
    cni_args: tuple[tuple[str, str], ...]
    capability_args: Mapping[str, Any]
    result: Result | None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": CACHE_KIND,
            "containerId": self.container_id,
            "ifName": self.ifname,
            "networkName": self.network,
            "netns": self.netns,
            "config": base64.b64encode(self.config.raw).decode(),
            "cniArgs": [list(p) for p in self.cni_args],
            "capabilityArgs": dict(self.capability_args),
            "result": None if self.result is None else self.result.to_json(),
        }

    @classmethod
    def from_json(cls, data: bytes, source: str) -> CacheEntry:
        try:
            obj = json.loads(data)
            if obj.get("kind") != CACHE_KIND:
                raise ValueError(f"unknown kind {obj.get('kind')!r}")
            config = parse_conflist(base64.b64decode(obj["config"]), f"{source} (cached config)")
            raw_result = obj.get("result")
            return cls(
                container_id=str(obj["containerId"]),
                ifname=str(obj["ifName"]),
                network=str(obj["networkName"]),
                config=config,
                netns=str(obj.get("netns", "")),
                cni_args=tuple((str(k), str(v)) for k, v in obj.get("cniArgs", [])),
                capability_args=dict(obj.get("capabilityArgs") or {}),
                result=None if raw_result is None else parse_result(raw_result, config.cni_version, what=source),
            )
        except (ValueError, KeyError, TypeError, AttributeError, errdefs.ContainerdError) as exc:
            raise errdefs.Unknown(f"CNI cache entry {source}: {exc}") from exc


class ResultCache:
    """``<dir>/<network>-<container id>-<ifname>`` JSON files (blocking methods)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)

    def path(self, network: str, container_id: str, ifname: str) -> Path:
        return self.dir / f"{network}-{container_id}-{ifname}"

    def put(self, entry: CacheEntry) -> None:
        fsmodes.private_dir(self.dir)
        target = self.path(entry.network, entry.container_id, entry.ifname)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(entry.to_json()).encode())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get(self, network: str, container_id: str, ifname: str) -> CacheEntry | None:
        p = self.path(network, container_id, ifname)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return None
        return CacheEntry.from_json(data, str(p))

    def for_container(self, container_id: str) -> list[CacheEntry]:
        out = []
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        for n in names:
            if n.startswith(".") or f"-{container_id}-" not in n:
                continue
            try:
                entry = CacheEntry.from_json((self.dir / n).read_bytes(), str(self.dir / n))
            except (OSError, errdefs.ContainerdError) as exc:
                log.warning("skipping CNI cache entry %s: %s", n, exc)
                continue
            if entry.container_id == container_id:
                out.append(entry)
        return out

    def delete(self, network: str, container_id: str, ifname: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(network, container_id, ifname).unlink()


# --- the manager ----------------------------------------------------------------------------


class CNI:
    """Pod networks from ``conf_dir`` with plugins from ``bin_dirs``; results cached in ``cache_dir``.

    The CRI plugin builds it from its ``[cni]`` config::

        net = CNI(conf_dir=cfg.cni.conf_dir, bin_dirs=cfg.cni.bin_search_path,
                  cache_dir=state / "cni", max_conf_num=cfg.cni.max_conf_num, ip_pref=cfg.cni.ip_pref)
    """

    def __init__(
        self,
        *,
        conf_dir: str | os.PathLike[str],
        bin_dirs: Sequence[str],
        cache_dir: str | os.PathLike[str],
        max_conf_num: int = 1,
        ip_pref: str = "",
        plugin_timeout: float = DEFAULT_PLUGIN_TIMEOUT,
        loopback: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.conf_dir = Path(conf_dir)
        self.bin_dirs = tuple(bin_dirs)
        self.cache = ResultCache(Path(cache_dir) / "results")
        self.max_conf_num = max_conf_num
        self.ip_pref = ip_pref
        self.plugin_timeout = plugin_timeout
        self.loopback = loopback
        self._env = dict(env) if env is not None else None

    # configuration

    def _load(self) -> tuple[Network, ...]:
        try:
            names = os.listdir(self.conf_dir)
        except FileNotFoundError:
            names = []
        except OSError as exc:
            raise errdefs.from_oserror(exc, "read CNI config directory") from exc
        files = [n for n in limit_conf_files(names, 0) if (self.conf_dir / n).is_file()]
        if self.max_conf_num > 0:
            files = files[: self.max_conf_num]
        configs = []
        for n in files:
            p = self.conf_dir / n
            try:
                data = p.read_bytes()
            except OSError as exc:
                raise errdefs.from_oserror(exc, "read CNI config") from exc
            configs.append(parse_file(str(p), data))
        if not configs:
            raise errdefs.FailedPrecondition(f"cni plugin not initialized: no network config found in {self.conf_dir}")
        return networks_from(configs, loopback=self.loopback)

    async def networks(self) -> tuple[Network, ...]:
        """The networks a pod gets now (loopback first); FailedPrecondition if there is no config."""
        return await asyncio.to_thread(self._load)

    def _check_plugins(self, networks: Sequence[Network]) -> None:
        missing = []
        for net in networks:
            for p in net.config.plugins:
                try:
                    find_plugin(p.type, self.bin_dirs)
                except PluginNotFound:
                    missing.append(f"{p.type} (network {net.name})")
        if missing:
            raise errdefs.FailedPrecondition(
                f"cni plugin not initialized: plugins not found in {':'.join(self.bin_dirs)}: {', '.join(missing)}"
            )

    def config_document(self, networks: Sequence[Network]) -> dict[str, Any]:
        """The configuration in go-cni's ``GetConfig`` shape (containerd's Status ``cniconfig``)."""
        def plugin(p: Any) -> dict[str, Any]:
            return {"Network": dict(p.raw), "Source": json.dumps(p.raw, separators=(",", ":"))}

        return {"PluginDirs": list(self.bin_dirs), "PluginConfDir": str(self.conf_dir),
                "PluginMaxConfNum": self.max_conf_num, "Prefix": "eth",
                "Networks": [{"Config": {"Name": n.config.name, "CNIVersion": n.config.cni_version,
                                         "Plugins": [plugin(p) for p in n.config.plugins],
                                         "Source": n.config.raw.decode(errors="replace")},
                              "IFName": n.ifname} for n in networks]}

    async def describe(self) -> tuple[dict[str, Any], str]:
        """(``config_document`` of the networks that load now, "OK" or why they do not load)."""
        try:
            networks = await self.networks()
        except errdefs.ContainerdError as exc:
            return self.config_document(()), str(exc)
        return self.config_document(networks), "OK"

    async def status(self) -> None:
        """NetworkReady: returns if a config is present and all its plugins are found, else raises
        FailedPrecondition saying what is missing."""
        networks = await self.networks()
        await asyncio.to_thread(self._check_plugins, networks)

    # running plugins

    def _base_env(self) -> Mapping[str, str]:
        return self._env if self._env is not None else os.environ

    async def _run(
        self,
        command: str,
        net: Network,
        config: NetworkConfigList,
        pod_id: str,
        netns: str,
        args: tuple[tuple[str, str], ...],
        caps: Mapping[str, Any],
        prev: Result | None,
        plugin_index: int,
    ) -> bytes:
        plugin = config.plugins[plugin_index]
        what = f'CNI plugin "{plugin.type}" {command} on network "{config.name}" ({net.ifname}) for {pod_id}'
        try:
            path = await asyncio.to_thread(find_plugin, plugin.type, self.bin_dirs)
        except PluginNotFound as exc:
            raise PluginNotFound(f"{what}: {exc}") from exc
        inv = Invocation(
            command=command, container_id=pod_id, netns=netns, ifname=net.ifname, args=args, path=self.bin_dirs
        )
        env = build_env(inv, self._base_env())
        stdin = plugin_stdin(config, plugin, prev_result=prev, capability_args=caps)
        return await exec_plugin(path, env=env, stdin=stdin, deadline=self.plugin_timeout, what=what)

    async def _add(
        self, net: Network, pod: PodNetwork, args: tuple[tuple[str, str], ...], caps: dict[str, Any]
    ) -> Result:
        entry = CacheEntry(pod.sandbox_id, net.ifname, net.name, net.config, pod.netns, args, caps, None)
        await asyncio.to_thread(self.cache.put, entry)
        prev: Result | None = None
        for i, plugin in enumerate(net.config.plugins):
            out = await self._run(ADD, net, net.config, pod.sandbox_id, pod.netns, args, caps, prev, i)
            prev = parse_result(
                out, net.config.cni_version, what=f'CNI plugin "{plugin.type}" ADD on network "{net.name}"'
            )
        assert prev is not None  # a list has at least one plugin
        await asyncio.to_thread(
            self.cache.put,
            CacheEntry(pod.sandbox_id, net.ifname, net.name, net.config, pod.netns, args, caps, prev),
        )
        return prev

    async def setup(self, pod: PodNetwork) -> SetupResult:
        """ADD the pod to every network; on failure everything is deleted again, then the
        error (a :class:`PluginError` naming the plugin) is raised."""
        networks = await self.networks()
        args = pod.cni_args()
        caps = pod.capabilities.to_json()
        attachments: list[Attachment] = []
        try:
            for net in networks:
                result = await self._add(net, pod, args, caps)
                attachments.append(Attachment(net.name, net.ifname, result))
            eth0 = [
                ip for ifname, ip in all_ips([(a.ifname, a.result) for a in attachments]) if ifname == DEFAULT_IFNAME
            ]
            pod_ip, additional = select_pod_ips(eth0, self.ip_pref)
        except BaseException as exc:
            errors = await asyncio.shield(self._teardown(networks, pod))
            for e in errors:
                exc.add_note(f"cleanup after the failed setup: {e}")
            raise
        return SetupResult(pod_ip=pod_ip, additional_ips=additional, attachments=tuple(attachments))

    async def _del(self, net: Network, pod: PodNetwork, cached: CacheEntry | None) -> list[Exception]:
        config = net.config
        args = pod.cni_args()
        if cached is not None and not (pod.namespace or pod.name or pod.uid):
            args = cached.cni_args  # a teardown that knows only the sandbox id
        caps = pod.capabilities.to_json() or (dict(cached.capability_args) if cached is not None else {})
        # libcni hands DEL the cached result from cniVersion 0.4.0 on
        prev = cached.result if cached is not None and version_at_least(config.cni_version, "0.4.0") else None
        errors: list[Exception] = []
        for i in reversed(range(len(config.plugins))):
            try:
                await self._run(DEL, net, config, pod.sandbox_id, pod.netns, args, caps, prev, i)
            except PluginNotFound as exc:
                # a missing binary has nothing to undo (or cannot undo it): retrying forever
                # would only keep the pod from being removed
                log.warning("skipping DEL: %s", exc)
            except errdefs.ContainerdError as exc:
                errors.append(exc)
        if not errors:
            await asyncio.to_thread(self.cache.delete, net.name, pod.sandbox_id, net.ifname)
        return errors

    async def _teardown(self, networks: Sequence[Network], pod: PodNetwork) -> list[Exception]:
        cached = {(e.network, e.ifname): e for e in await asyncio.to_thread(self.cache.for_container, pod.sandbox_id)}
        # a network the pod was added to is deleted with the config it was added with (the
        # file may have changed or gone since); the others of the current config too (a
        # setup cut short by a crash left no entry, as in go-cni)
        todo = [
            Network(cached[(n.name, n.ifname)].config, n.ifname) if (n.name, n.ifname) in cached else n
            for n in networks
        ]
        known = {(n.name, n.ifname) for n in networks}
        todo.extend(Network(e.config, e.ifname) for key, e in cached.items() if key not in known)
        if pod.netns and not await asyncio.to_thread(os.path.exists, pod.netns):
            pod = dataclasses.replace(pod, netns="")  # gone: the spec lets DEL run without one
        errors: list[Exception] = []
        for net in reversed(todo):
            errors.extend(await self._del(net, pod, cached.get((net.name, net.ifname))))
        return errors

    async def teardown(self, pod: PodNetwork) -> None:
        """DEL the pod from every network (best effort; idempotent).  Raises the first error
        (others as notes) after trying everything; the cache keeps what failed for a retry."""
        try:
            networks: tuple[Network, ...] = await self.networks()
        except errdefs.ContainerdError as exc:
            log.warning("CNI teardown of %s without the current config: %s", pod.sandbox_id, exc)
            networks = ()  # the cache still says what to delete
        errors = await asyncio.shield(self._teardown(networks, pod))
        if errors:
            first = errors[0]
            for e in errors[1:]:
                first.add_note(str(e))
            raise first

    async def check(self, pod: PodNetwork) -> None:
        """CHECK every network that supports it against its cached result."""
        networks = await self.networks()
        for net in networks:
            if not net.config.supports_check:
                continue
            cached = await asyncio.to_thread(self.cache.get, net.name, pod.sandbox_id, net.ifname)
            if cached is None or cached.result is None:
                raise errdefs.NotFound(
                    f'CNI network "{net.name}" ({net.ifname}): no cached result for {pod.sandbox_id}'
                )
            for i in range(len(net.config.plugins)):
                await self._run(
                    CHECK,
                    net,
                    net.config,
                    pod.sandbox_id,
                    pod.netns,
                    cached.cni_args,
                    dict(cached.capability_args),
                    cached.result,
                    i,
                )
