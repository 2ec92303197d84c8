"""Every config key is honoured or refused at start-up naming it (the daemon-level keys and the
CRI keys an audit found decoded and then used by nothing)."""

from __future__ import annotations

import pytest

from pycontainerd.config import ConfigError, parse_config

SRC = "/etc/pycd/config.toml"
CRI = 'plugins."io.containerd.grpc.v1.cri"'


def _refused(toml: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config("version = 2\n" + toml, SRC)
    return str(exc.value)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('plugin_dir = "/usr/lib/containerd/plugins"\n', "plugin_dir"),
        ('[proxy_plugins.stargz]\ntype = "snapshot"\naddress = "/run/stargz.sock"\n', "proxy_plugins"),
        ('[stream_processors."io.containerd.ocicrypt.decoder.v1.tar"]\naccepts = ["x"]\npath = "ctd-decoder"\n',
         "stream_processors"),
        ('[plugins."io.containerd.runtime.v1.linux"]\nno_shim = true\n',
         'plugins."io.containerd.runtime.v1.linux".no_shim'),
        ('[plugins."io.containerd.runtime.v1.linux"]\nshim = "/usr/bin/my-shim"\n',
         'plugins."io.containerd.runtime.v1.linux".shim'),
        ('[timeouts]\n"io.containerd.timeout.bolt.open" = "5s"\n', 'timeouts."io.containerd.timeout.bolt.open"'),
        ('[timeouts]\n"io.containerd.timeout.metrics.shimstats" = "5s"\n',
         'timeouts."io.containerd.timeout.metrics.shimstats"'),
    ],
)
def test_options_we_cannot_honour_are_refused_naming_the_key(toml: str, key: str) -> None:
    message = _refused(toml)
    assert message.startswith(f"{SRC}: {key}: ")
    assert "not supported" in message


def test_their_defaults_are_accepted() -> None:
    cfg = parse_config(
        'version = 2\nplugin_dir = ""\n[proxy_plugins]\n[stream_processors]\n'
        '[timeouts]\n"io.containerd.timeout.bolt.open" = "0s"\n"io.containerd.timeout.metrics.shimstats" = "2s"\n'
        '[plugins."io.containerd.runtime.v1.linux"]\nshim = "containerd-shim"\nno_shim = false\n'
        f'[{CRI}.containerd]\ndisable_snapshot_annotations = true\n'
        f'[{CRI}.image_decryption]\nkey_model = "node"\n',
        SRC,
    )
    assert cfg.warnings == ()


def test_an_unknown_timeout_is_refused_naming_it() -> None:
    message = _refused('[timeouts]\n"io.containerd.timeout.shim.lod" = "5s"\n')
    assert message.startswith(f'{SRC}: timeouts."io.containerd.timeout.shim.lod": unknown timeout')
    assert "io.containerd.timeout.shim.load" in message  # the ones we honour are listed


def test_key_model_is_node_or_off() -> None:
    assert parse_config(f'version = 2\n[{CRI}.image_decryption]\nkey_model = ""\n').cri.image_decryption.key_model == ""
    message = _refused(f'[{CRI}.image_decryption]\nkey_model = "pod"\n')
    assert message.startswith(f"{SRC}: {CRI}.image_decryption.key_model: invalid value 'pod'")


# -- oom_score ---------------------------------------------------------------------------------


def test_oom_score_is_written_to_the_daemons_own_oom_score_adj() -> None:
    """In a child process (raising the score is allowed to anyone, and it must not stick to pytest)."""
    import subprocess
    import sys

    code = ("from pycontainerd.daemon.oom import apply_oom_score, read_oom_score_adj\n"
            "assert apply_oom_score(0) is None\n"
            "before = read_oom_score_adj()\n"
            "print(apply_oom_score(min(before + 7, 1000)), before, read_oom_score_adj())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    problem, before, after = out.stdout.split()
    assert problem == "None"
    assert int(after) == min(int(before) + 7, 1000)


def test_oom_score_that_cannot_be_set_is_an_error_naming_the_key(tmp_path: object) -> None:
    from pathlib import Path

    from pycontainerd.daemon.oom import apply_oom_score

    not_writable = Path(str(tmp_path))  # a directory: the write fails as /proc refuses a lower score
    message = apply_oom_score(-999, str(not_writable))
    assert message is not None
    assert message.startswith("config key oom_score = -999: cannot write ")


def test_a_lower_oom_score_without_cap_sys_resource_says_why() -> None:
    """What these VMs answer: root without CAP_SYS_RESOURCE writing a negative score gets EACCES."""
    import errno

    from pycontainerd.daemon.oom import failure_message

    message = failure_message(-500, "/proc/self/oom_score_adj", PermissionError(errno.EACCES, "denied"), 0)
    assert message == ("config key oom_score = -500: cannot write /proc/self/oom_score_adj: Permission denied; "
                       "lowering oom_score_adj needs CAP_SYS_RESOURCE, which this process does not have "
                       "(the daemon keeps oom_score_adj 0)")


# -- [plugins."io.containerd.monitor.v1.cgroups"] no_prometheus ---------------------------------------


@pytest.mark.parametrize("no_prometheus", [False, True])
def test_no_prometheus_drops_the_task_cgroup_metrics(no_prometheus: bool) -> None:
    import os
    from types import SimpleNamespace

    from prometheus_client import generate_latest

    from pycontainerd.daemon.ops import OpsServers

    cfg = parse_config(f'version = 2\n[metrics]\naddress = "127.0.0.1:1338"\n'
                       f'[plugins."io.containerd.monitor.v1.cgroups"]\nno_prometheus = {str(no_prometheus).lower()}\n')
    ops = OpsServers(SimpleNamespace(config=cfg))
    me = SimpleNamespace(id="c1", namespace="default", pid=os.getpid(), cgroups_path="", systemd_cgroup=False,
                         shim_pid=0)
    ops.registry.set_tasks([me])
    text = generate_latest(ops.registry.registry).decode()
    assert ('{container_id="c1",namespace="default"}' in text) is not no_prometheus  # container_cpu_*, memory...
    assert "pycontainerd_shims" in text  # the rest of the endpoint is there either way


# -- CRI image_pull_progress_timeout (virtual clock) -----------------------------------------------


def test_a_pull_that_keeps_reading_is_not_cancelled() -> None:
    import asyncio

    from pycontainerd.cri.imagestore import ProgressWatch
    from tests.fixtures import virtual_clock

    async def main() -> float:
        watch = ProgressWatch(3.0, "r/x:1")
        loop = asyncio.get_running_loop()

        async def fetch() -> float:
            for i in range(10):  # 20 s in all, a byte every 2 s
                await asyncio.sleep(2)
                watch.progress("layer", i, 10, "downloading")
            return loop.time()

        return await watch.run(fetch())

    assert virtual_clock.run(main()) == 20.0


def test_a_pull_without_progress_is_cancelled_after_the_timeout() -> None:
    import asyncio

    from pycontainerd import errdefs
    from pycontainerd.cri.imagestore import ProgressWatch
    from tests.fixtures import virtual_clock

    cancelled_at: list[float] = []

    async def main() -> float:
        watch = ProgressWatch(5.0, "r/x:1")
        loop = asyncio.get_running_loop()

        async def fetch() -> None:
            watch.progress("layer", 0, 10, "downloading")
            await asyncio.sleep(1)
            watch.progress("layer", 1, 10, "downloading")  # then the registry goes quiet
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled_at.append(loop.time())
                raise

        with pytest.raises(errdefs.DeadlineExceeded, match=r"cancel pulling image r/x:1 because of no progress in 5s"):
            await watch.run(fetch())
        return loop.time()

    assert virtual_clock.run(main()) == 6.0  # 5 s after the last byte, not after the start
    assert cancelled_at == [6.0]  # the fetch itself was cancelled


def test_progress_timeout_zero_means_none() -> None:
    import asyncio

    from pycontainerd.cri.imagestore import ProgressWatch
    from tests.fixtures import virtual_clock

    async def main() -> str:
        async def fetch() -> str:
            await asyncio.sleep(10_000)
            return "done"

        return await ProgressWatch(0.0, "r/x:1").run(fetch())

    assert virtual_clock.run(main()) == "done"


# -- CRI containerd.discard_unpacked_layers ------------------------------------------------------------


def test_discarded_layers_are_not_referenced_by_their_manifest() -> None:
    from pycontainerd.images import handlers
    from pycontainerd.images.models import Descriptor

    config = Descriptor("application/vnd.oci.image.config.v1+json", "sha256:" + "c" * 64, 10)
    layers = [Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + f"{i}" * 64, 10)
              for i in (1, 2)]
    kept = handlers.child_gc_labels([config, *layers])
    assert kept == {"containerd.io/gc.ref.content.config": config.digest,
                    "containerd.io/gc.ref.content.l.0": layers[0].digest,
                    "containerd.io/gc.ref.content.l.1": layers[1].digest}
    assert handlers.child_gc_labels([config, *layers], layers=False) == {
        "containerd.io/gc.ref.content.config": config.digest}


# -- CRI max_concurrent_downloads, cni.max_conf_num, netns_mounts_under_state_dir -----------------------


class _SlowRegistry:
    """A ``Fetcher`` serving one image from memory; it counts the layer downloads running at once."""

    def __init__(self, blobs: dict[str, bytes], together: int) -> None:
        self.blobs = blobs
        self.together = together  # each download waits (bounded) until this many run at once
        self.running = self.most = 0
        self.left = 5  # layer downloads not finished yet

    async def fetch_bytes(self, desc: object) -> bytes:
        return self.blobs[desc.digest]  # type: ignore[attr-defined]

    async def copy_blob(self, desc: object, sink: object, offset: int = 0, progress: object = None) -> None:
        import asyncio

        self.running += 1
        self.most = max(self.most, self.running)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            # the others start, if they may
            while self.running < min(self.together, self.left) and loop.time() < deadline:
                await asyncio.sleep(0.005)
            await sink(self.blobs[desc.digest][offset:])  # type: ignore[attr-defined,operator]
        finally:
            self.running -= 1
            self.left -= 1


@pytest.mark.parametrize(("limit", "most"), [(2, 2), (1, 1), (0, 5)])
def test_max_concurrent_downloads_bounds_the_layer_downloads(tmp_path: object, limit: int, most: int) -> None:
    import hashlib
    import json
    from pathlib import Path

    from pycontainerd.cri.imagestore import CriImageStore
    from pycontainerd.images import platforms
    from pycontainerd.images.models import Descriptor
    from pycontainerd.remotes.pull import Fetch
    from tests.unit.local_content import run_with_stores

    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    blobs = dict(blob(f"layer {i}".encode() * 100) for i in range(5))
    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": len(b)}
              for d, b in blobs.items()]
    cfg_digest, cfg = blob(b'{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}')
    blobs[cfg_digest] = cfg
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cfg_digest, "size": len(cfg)},
                           "layers": layers}).encode()
    m_digest, _ = blob(manifest)
    blobs[m_digest] = manifest
    registry = _SlowRegistry(blobs, together=most)
    # the CRI's store turns the config value into the Fetch's bound (0: none, as containerd)
    store = CriImageStore(content=None, snapshots=None, differ=None, images=None, leases=None,  # type: ignore[arg-type]
                          snapshotter="overlayfs", snapshotter_root="/x", registry=None,  # type: ignore[arg-type]
                          max_concurrent_downloads=limit)

    async def body(local: object, content: object) -> None:
        fetch = Fetch(content.namespaced("k8s.io"), registry,  # type: ignore[attr-defined,arg-type]
                      "example.com/x:1",
                      platforms.default(), max_concurrent=store.max_concurrent)
        await fetch.walk(Descriptor("application/vnd.oci.image.manifest.v1+json", m_digest, len(manifest)))
        assert fetch.fetched == 7

    run_with_stores(Path(str(tmp_path)), body)
    assert registry.most == most


def test_max_conf_num_limits_the_networks(tmp_path: object) -> None:
    import asyncio
    import json
    from pathlib import Path

    from pycontainerd.cri.wiring import CriPlugin

    base = Path(str(tmp_path))
    conf_dir = base / "net.d"
    conf_dir.mkdir()
    for i, name in enumerate(("10-a", "20-b", "30-c")):
        (conf_dir / f"{name}.conflist").write_text(json.dumps(
            {"cniVersion": "1.0.0", "name": f"net{i}", "plugins": [{"type": "bridge"}]}))

    def names(max_conf_num: int) -> list[str]:
        cfg = parse_config(f'version = 2\n[{CRI}.cni]\nconf_dir = "{conf_dir}"\nmax_conf_num = {max_conf_num}\n')
        plugin = CriPlugin(cfg.cri, None, state_dir=base / "state")  # type: ignore[arg-type]
        cni = plugin.runtime_state.cni
        return [n.name for n in asyncio.run(cni.networks())]  # type: ignore[union-attr]

    assert names(1) == ["cni-loopback", "net0"]  # the default: the first file only
    assert names(2) == ["cni-loopback", "net0", "net1"]
    assert names(0) == ["cni-loopback", "net0", "net1", "net2"]  # 0: all of them


def test_netns_mounts_under_state_dir(tmp_path: object) -> None:
    from pathlib import Path

    from pycontainerd.netns import netns_dir

    state = Path(str(tmp_path)) / "io.containerd.grpc.v1.cri"
    for toml, want in (("", Path("/var/run/netns")), ("netns_mounts_under_state_dir = true", state / "netns")):
        cfg = parse_config(f"version = 2\n[{CRI}]\n{toml}\n")
        assert netns_dir(state, under_state_dir=cfg.cri.netns_mounts_under_state_dir) == want


# -- CRI disable_tcp_service, stats_collect_period ------------------------------------------------------------


def test_cri_on_tcp_with_grpc_tcp_address() -> None:
    # false alone changes nothing (containerd serves CRI on TCP only on grpc.tcp_address's server);
    # with it the CRI is served there: tests/integration/test_grpc_server.py shows the effect
    assert parse_config(f"version = 2\n[{CRI}]\ndisable_tcp_service = false\n").cri.disable_tcp_service is False
    cfg = parse_config(f'version = 2\n[grpc]\ntcp_address = "127.0.0.1:10010"\ntcp_tls_cert = "/c.pem"\n'
                       f'tcp_tls_key = "/k.pem"\ntcp_tls_ca = "/ca.pem"\n[{CRI}]\ndisable_tcp_service = false\n')
    assert (cfg.grpc.tcp_address, cfg.grpc.tcp_tls_cert, cfg.grpc.tcp_tls_key, cfg.grpc.tcp_tls_ca) == (
        "127.0.0.1:10010", "/c.pem", "/k.pem", "/ca.pem")
    assert cfg.cri.disable_tcp_service is False


def test_stats_collect_period_is_at_least_a_second() -> None:
    assert parse_config(f"version = 2\n[{CRI}]\nstats_collect_period = 1\n").cri.stats_collect_period == 1
    assert _refused(f"[{CRI}]\nstats_collect_period = 0\n") == f"{SRC}: {CRI}.stats_collect_period: must be >= 1, got 0"


# -- temp, [cgroup] path, [ttrpc] ---------------------------------------------------------------------------


def test_cgroup_path_and_ttrpc_are_accepted() -> None:
    # their effect (the daemon in that cgroup, the shims' events on that socket) is shown by
    # tests/integration/test_runtime_v2_external.py::test_ttrpc_address_and_cgroup_path_from_the_config
    cfg = parse_config('version = 2\n[cgroup]\npath = "/pycontainerd"\n[ttrpc]\naddress = "/run/elsewhere.sock"\n'
                       'uid = 1000\ngid = 1000\n')
    got = (cfg.cgroup.path, cfg.ttrpc.address, cfg.ttrpc.uid, cfg.ttrpc.gid)
    assert got == ("/pycontainerd", "/run/elsewhere.sock", 1000, 1000)


def test_temp_becomes_the_daemons_tmpdir(tmp_path: object) -> None:
    import subprocess
    import sys
    from pathlib import Path

    temp = Path(str(tmp_path)) / "ctd-tmp"
    code = ("import tempfile, os\nfrom pycontainerd.daemon.tempdir import apply_temp_dir\n"
            "tempfile.gettempdir()\n"  # cached before: the daemon's imports may have asked already
            f"apply_temp_dir({str(temp)!r})\n"
            "print(os.environ['TMPDIR'], tempfile.gettempdir(), oct(os.stat(os.environ['TMPDIR']).st_mode & 0o777))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == [str(temp), str(temp), "0o711"]
    assert _refused('temp = "relative/tmp"\n') == f"{SRC}: temp: must be an absolute path, got 'relative/tmp'"


# -- CRI containerd.disable_snapshot_annotations -------------------------------------------------------------


def test_snapshot_annotations_as_containerd_sets_them() -> None:
    from pycontainerd.cri.imagestore import snapshot_labels
    from pycontainerd.images import handlers
    from pycontainerd.images.models import Descriptor

    layer_mt = "application/vnd.oci.image.layer.v1.tar+gzip"
    layers = [Descriptor(layer_mt, "sha256:" + f"{i}" * 64, 10) for i in (1, 2, 3)]
    diff_ids = ["sha256:" + f"{c}" * 64 for c in "abc"]
    manifest = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "e" * 64, 100)

    from types import SimpleNamespace

    # what snapshot_labels reads of a handlers.ResolvedImage
    resolved = SimpleNamespace(manifest_desc=manifest, manifest=SimpleNamespace(layers=layers),
                               config=SimpleNamespace(diff_ids=diff_ids))
    got = snapshot_labels(resolved, "docker.io/library/x:1")  # type: ignore[arg-type]
    top = handlers.chain_id(diff_ids)
    assert list(got) == [handlers.chain_id(diff_ids[:1]), handlers.chain_id(diff_ids[:2]), top]
    assert got[handlers.chain_id(diff_ids[:2])] == {
        "containerd.io/snapshot/cri.image-ref": "docker.io/library/x:1",
        "containerd.io/snapshot/cri.manifest-digest": manifest.digest,
        "containerd.io/snapshot/cri.layer-digest": layers[1].digest,
        "containerd.io/snapshot/cri.image-layers": f"{layers[1].digest},{layers[2].digest}",  # it and those above
    }
    # a list longer than a label holds is cut at the last digest that fits
    many = [Descriptor(layer_mt, "sha256:" + f"{i:064x}", 10) for i in range(100)]
    resolved.manifest.layers = many
    resolved.config.diff_ids = ["sha256:" + f"{i + 1000:064x}" for i in range(100)]
    first = next(iter(snapshot_labels(resolved, "r").values()))  # type: ignore[arg-type]
    listed = first["containerd.io/snapshot/cri.image-layers"].split(",")
    assert listed == [d.digest for d in many[: len(listed)]] and 40 < len(listed) < 100
