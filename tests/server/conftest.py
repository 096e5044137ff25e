"""What the real-federation tests of the server share: one private local SuperLink per module."""

from __future__ import annotations

import pytest
from federation_harness import LocalFederation, open_local_federation


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> LocalFederation:
    """A private SuperLink in simulation mode (its own Flower home, ports and data cache), stopped after the module."""
    local = open_local_federation(tmp_path_factory.mktemp("federation"))
    yield local
    local.stop()
