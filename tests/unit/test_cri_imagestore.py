"""Pure parts of the CRI plugin: credentials from AuthConfig, id prefixes, image users, config JSON."""

from __future__ import annotations

import asyncio
import base64

import pytest

from pycontainerd import errdefs
from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.config import (
    AuthConfig,
    CRIConfig,
    MirrorConfig,
    RegistryConfig,
    RegistryHostConfig,
    TLSConfig,
)
from pycontainerd.cri import imagestore as st
from pycontainerd.cri import runtime


def _img(id_: str, user: str = "") -> st.CriImage:
    return st.CriImage(id_, [], [], 1, {"config": {"User": user}}, "", [id_])


def _none(host: str) -> tuple[str, str] | None:
    return None


def test_credentials_from_auth_config() -> None:
    assert st._credentials(None, _none)("h") is None
    assert st._credentials(st.PullAuth(username="u", password="p"), _none)("h") == ("u", "p")
    assert st._credentials(st.PullAuth(identity_token="t"), _none)("h") == ("", "t")
    auth = base64.b64encode(b"u:p:x").decode()
    assert st._credentials(st.PullAuth(auth=auth), _none)("h") == ("u", "p:x")
    with pytest.raises(errdefs.InvalidArgument):
        st._credentials(st.PullAuth(auth="!!"), _none)("h")
    # registry_token is not supported (as in containerd 1.6): anonymous
    assert st._credentials(st.PullAuth(registry_token="t"), _none)("h") is None


def test_credentials_only_for_the_named_server() -> None:
    def config(host: str) -> tuple[str, str] | None:
        return ("cfg", "pw") if host == "other:5000" else None

    auth = st.PullAuth(username="u", password="p", server_address="https://reg:5000")
    creds = st._credentials(auth, config)
    assert creds("reg:5000") == ("u", "p")
    assert creds("other:5000") == ("cfg", "pw")
    assert st._credentials(st.PullAuth(username="u", server_address="docker.io"), _none)(
        "registry-1.docker.io") == ("u", "")


def test_id_prefix_lookup() -> None:
    a, b = _img("sha256:" + "ab" * 32), _img("sha256:" + "ac" * 32)
    assert st._by_id_prefix([a, b], "abab", "k8s.io") is a
    assert st._by_id_prefix([a, b], "sha256:ac", "k8s.io") is b
    with pytest.raises(errdefs.Unknown, match="ambiguous"):
        st._by_id_prefix([a, b], "a", "k8s.io")
    for missing in ("sha512:ab", "ff", "not-hex", ":ab"):
        with pytest.raises(errdefs.NotFound):
            st._by_id_prefix([a, b], missing, "k8s.io")
    assert st._by_id_prefix([a], "", "k8s.io") is a  # like containerd's digest set: "" is a prefix of all


@pytest.mark.parametrize(("user", "want"), [
    ("", (None, "")), ("1000", (1000, "")), ("1000:1000", (1000, "")), ("nobody", (None, "nobody")),
    ("www:www", (None, "www")),
])
def test_image_user(user: str, want: tuple[int | None, str]) -> None:
    assert _img("sha256:" + "a" * 64, user).user == want


def test_registry_settings_from_config() -> None:
    reg = RegistryConfig(
        mirrors={"docker.io": MirrorConfig(endpoint=("http://127.0.0.1:5000",))},
        configs={"127.0.0.1:5000": RegistryHostConfig(auth=AuthConfig(username="u", password="p"),
                                                      tls=TLSConfig(insecure_skip_verify=True))},
        headers={"X-A": ("1", "2")})
    s = st.registry_settings(reg)
    assert s.mirrors == {"docker.io": ["http://127.0.0.1:5000"]}
    assert s.auths["127.0.0.1:5000"]["username"] == "u"
    assert s.tls["127.0.0.1:5000"].skip_verify is True
    assert s.headers == {"X-A": "1, 2"}


def test_status_config_json_is_camel_case() -> None:
    doc = runtime.config_json(CRIConfig())
    assert doc["sandboxImage"] == CRIConfig().sandbox_image
    assert doc["containerd"]["snapshotter"] == "overlayfs"


def test_every_unserved_runtime_method_is_unimplemented() -> None:
    svc = runtime.RuntimeService(runtime.RuntimeState(CRIConfig()))
    missing = runtime.unimplemented_methods(svc)
    # Exec/Attach/PortForward: the streaming server; CheckpointContainer: answered with its reason
    assert not {"Exec", "Attach", "PortForward", "CheckpointContainer"} & set(missing)
    assert not {"Version", "Status", "UpdateRuntimeConfig", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox",
                "PodSandboxStatus", "ListPodSandbox", "PodSandboxStats", "ListPodSandboxStats", "RuntimeConfig",
                "GetContainerEvents", "ListMetricDescriptors", "ListPodSandboxMetrics", "StreamPodSandboxes",
                "StreamContainers", "StreamContainerStats", "StreamPodSandboxStats",
                "StreamPodSandboxMetrics"} & set(missing)
    assert missing == []


def test_an_unserved_method_answers_unimplemented_by_name() -> None:
    """What ``fill_unimplemented`` gives a servicer for a method it lacks (every RuntimeService method
    is served now; UpdatePodSandboxResources was the last)."""

    class Bare:
        pass

    svc = Bare()
    runtime.fill_unimplemented(svc, "RuntimeService")
    with pytest.raises(errdefs.Unimplemented, match="RuntimeService/UpdatePodSandboxResources is not implemented"):
        asyncio.run(svc.UpdatePodSandboxResources(pb.UpdatePodSandboxResourcesRequest(), None))  # type: ignore[attr-defined]


def test_every_image_method_is_served() -> None:
    from pycontainerd.cri.images import ImageService

    assert runtime.unimplemented_methods(ImageService(None), "ImageService") == []  # type: ignore[arg-type]


def test_stream_batches_hold_each_item_once_and_none_is_empty() -> None:
    assert runtime.batches([]) == []
    assert runtime.batches([1, 2, 3], 2) == [[1, 2], [3]]
    items = list(range(2 * runtime.STREAM_BATCH + 1))
    out = runtime.batches(items)
    assert [len(b) for b in out] == [runtime.STREAM_BATCH, runtime.STREAM_BATCH, 1]
    assert [i for b in out for i in b] == items
