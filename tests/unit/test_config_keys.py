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
        ('[plugins."io.containerd.runtime.v1.linux"]\nno_shim = true\n', 'plugins."io.containerd.runtime.v1.linux".no_shim'),
        ('[plugins."io.containerd.runtime.v1.linux"]\nshim = "/usr/bin/my-shim"\n',
         'plugins."io.containerd.runtime.v1.linux".shim'),
        (f"[{CRI}.containerd]\ndisable_snapshot_annotations = false\n",
         f"{CRI}.containerd.disable_snapshot_annotations"),
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
