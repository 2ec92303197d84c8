"""Pin the client library's public names: removing one is a breaking change."""

import pycontainerd.client


def test_client_exports() -> None:
    assert set(pycontainerd.client.__all__) >= {"Client", "SyncClient", "Version", "DEFAULT_ADDRESS",
                                                "DEFAULT_NAMESPACE"}
    for name in pycontainerd.client.__all__:
        assert hasattr(pycontainerd.client, name)
