"""CRI ``cni.conf_template``: the Go text/template subset containerd's users write, rendered with
containerd's data (``.PodCIDR``, ``.PodCIDRRanges``, ``.Routes``), everything else refused; and
``UpdateRuntimeConfig`` writing it only while the network is not ready."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.cni import CNI
from pycontainerd.cni import conftemplate as ct
from pycontainerd.config import parse_config
from pycontainerd.cri.runtime import RuntimeState

# the template of containerd's docs (kubenet-style ptp + host-local), in Go template syntax
DOCS_TEMPLATE = """\
{{- /* containerd renders this into conf_dir */ -}}
{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "ptp",
      "mtu": 1460,
      "ipam": {
        "type": "host-local",
        "subnet": "{{.PodCIDR}}",
        "ranges": [{{range $i, $range := .PodCIDRRanges}}{{if $i}}, {{end}}[{"subnet": "{{$range}}"}]{{end}}],
        "routes": [{{range $i, $route := .Routes}}{{if $i}}, {{end}}{"dst": "{{$route}}"}{{end}}]
      }
    }
  ]
}
"""


def test_data_is_containerds() -> None:
    assert ct.template_data("10.1.0.0/24") == {"PodCIDR": "10.1.0.0/24", "PodCIDRRanges": ["10.1.0.0/24"],
                                              "Routes": ["0.0.0.0/0"]}
    assert ct.template_data("10.1.0.0/24, fd00:1::/64") == {
        "PodCIDR": "10.1.0.0/24", "PodCIDRRanges": ["10.1.0.0/24", "fd00:1::/64"], "Routes": ["0.0.0.0/0", "::/0"]}
    assert ct.template_data("fd00::5/64")["Routes"] == ["::/0"]  # host bits allowed, as Go's ParseCIDR
    with pytest.raises(ValueError):
        ct.template_data("10.1.0.0/33")


def test_the_docs_template_renders_to_valid_json() -> None:
    conf = json.loads(ct.render(DOCS_TEMPLATE, ct.template_data("10.1.0.0/24,fd00:1::/64")))
    ipam = conf["plugins"][0]["ipam"]
    assert ipam["subnet"] == "10.1.0.0/24"
    assert ipam["ranges"] == [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64"}]]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]


@pytest.mark.parametrize(
    ("template", "out"),
    [
        ("{{.PodCIDRRanges}}|{{.Routes}}", "[10.0.0.0/8 fd00::/8]|[0.0.0.0/0 ::/0]"),  # Go prints a slice so
        ("{{range .Routes}}<{{.}}>{{end}}", "<0.0.0.0/0><::/0>"),
        ("{{range $r := .Routes}}{{$r}};{{end}}", "0.0.0.0/0;::/0;"),
        ("{{range .Routes}}{{$.PodCIDR}} {{end}}", "10.0.0.0/8 10.0.0.0/8 "),
        ("{{if .PodCIDR}}yes{{else}}no{{end}}", "yes"),
        ("a  {{- .PodCIDR -}}  b", "a10.0.0.0/8b"),
        ("x{{/* a comment */}}y", "xy"),
    ],
)
def test_the_subset(template: str, out: str) -> None:
    assert ct.render(template, ct.template_data("10.0.0.0/8,fd00::/8")) == out


def test_range_else_on_an_empty_list() -> None:
    assert ct.render("{{range .Routes}}x{{else}}none{{end}}", {"PodCIDR": "", "PodCIDRRanges": [], "Routes": []}) \
        == "none"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ('{{printf "%s" .PodCIDR}}', "is not supported"),
        ("{{.PodCIDR | html}}", "is not supported"),
        ('{{"literal"}}', "is not supported"),
        ("{{with .PodCIDR}}{{.}}{{end}}", "is not supported"),
        ('{{define "x"}}{{end}}', "is not supported"),
        ("{{.NodeName}}", "can't evaluate field NodeName"),
        ("{{$nope}}", "undefined variable $nope"),
        ("{{range .Routes}}", "unclosed action"),
        ("{{end}}", "unexpected {{end}}"),
        ("{{.PodCIDR", "unclosed action"),
    ],
)
def test_other_syntax_is_refused_naming_it(template: str, problem: str) -> None:
    with pytest.raises(ct.TemplateError, match=re.escape(problem)):
        ct.render(template, ct.template_data("10.0.0.0/8"), name="/etc/cni/tpl")


def test_write_conf(tmp_path: Path) -> None:
    tpl = tmp_path / "tpl"
    tpl.write_text(DOCS_TEMPLATE)
    conf_dir = tmp_path / "net.d"
    path = ct.write_conf(str(tpl), str(conf_dir), "10.2.0.0/16")
    assert path == conf_dir / "10-containerd-net.conflist"
    assert path.stat().st_mode & 0o777 == 0o644
    assert json.loads(path.read_text())["plugins"][0]["ipam"]["subnet"] == "10.2.0.0/16"
    assert [p.name for p in conf_dir.iterdir()] == ["10-containerd-net.conflist"]  # no temp file left


class FakeCNI:
    def __init__(self, conf_dir: Path) -> None:
        self.conf_dir = conf_dir

    async def status(self) -> None:
        if not any(self.conf_dir.glob("*.conflist")):
            raise errdefs.FailedPrecondition("cni plugin not initialized: no network config found")


def _state(tmp_path: Path, template: str) -> tuple[RuntimeState, Path]:
    conf_dir = tmp_path / "net.d"
    tpl = tmp_path / "tpl"
    tpl.write_text(template)
    cfg = parse_config(f'version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\nconf_dir = "{conf_dir}"\n'
                       f'conf_template = "{tpl}"\n')
    return RuntimeState(cfg.cri, FakeCNI(conf_dir)), conf_dir  # type: ignore[arg-type]


def test_update_runtime_config_renders_while_the_network_is_not_ready(tmp_path: Path) -> None:
    state, conf_dir = _state(tmp_path, DOCS_TEMPLATE)
    asyncio.run(state.render_cni_conf("10.3.0.0/24"))
    conf = conf_dir / "10-containerd-net.conflist"
    assert json.loads(conf.read_text())["plugins"][0]["ipam"]["subnet"] == "10.3.0.0/24"
    # ready now: a new CIDR leaves the config alone (containerd: "network plugin is ready, skip")
    asyncio.run(state.render_cni_conf("10.4.0.0/24"))
    assert json.loads(conf.read_text())["plugins"][0]["ipam"]["subnet"] == "10.3.0.0/24"


def test_a_refused_template_fails_the_call_naming_the_key(tmp_path: Path) -> None:
    state, conf_dir = _state(tmp_path, '{{printf "%s" .PodCIDR}}')
    with pytest.raises(errdefs.FailedPrecondition, match=r"cni\.conf_template: .*tpl:1: .* is not supported"):
        asyncio.run(state.render_cni_conf("10.3.0.0/24"))
    assert not conf_dir.exists() or not any(conf_dir.iterdir())


def test_a_bad_cidr_is_refused(tmp_path: Path) -> None:
    state, _ = _state(tmp_path, DOCS_TEMPLATE)
    with pytest.raises(errdefs.InvalidArgument, match=r"10\.3\.0\.0/99"):
        asyncio.run(state.render_cni_conf("10.3.0.0/99"))


def test_status_cni_info_says_why_a_config_does_not_load(tmp_path: Path) -> None:
    """A verbose Status' lastCNILoadStatus (containerd 1.6's keys): "OK", or the load error, for the
    default network plugin and each handler with its own conf dir; cniconfig for the default."""
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    (full / "10-a.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "a", "plugins": [
        {"type": "bridge", "bridge": "br-a"}]}))
    cfg = parse_config("version = 2\n")

    def cni(d: Path) -> CNI:
        return CNI(conf_dir=d, bin_dirs=[str(tmp_path / "bin")], cache_dir=tmp_path / "cache")

    info = asyncio.run(RuntimeState(cfg.cri, cni(empty), {"h": cni(full)}).cni_info())
    assert info["lastCNILoadStatus"] == info["lastCNILoadStatus.default"]
    assert "no network config found in" in info["lastCNILoadStatus"] and info["lastCNILoadStatus.h"] == "OK"
    assert json.loads(info["cniconfig"])["Networks"] == []
    info = asyncio.run(RuntimeState(cfg.cri, cni(full)).cni_info())
    assert (info["lastCNILoadStatus"], info["lastCNILoadStatus.default"]) == ("OK", "OK")
    doc = json.loads(info["cniconfig"])
    assert [(n["IFName"], n["Config"]["Name"]) for n in doc["Networks"]] == [("lo", "cni-loopback"), ("eth0", "a")]
    assert doc["Networks"][1]["Config"]["Plugins"][0]["Network"] == {"type": "bridge", "bridge": "br-a"}
