"""Secure aggregation refuses Flower versions it was not verified against."""

import flwr
import pytest

from segguided_federation.flower_pin import (
    VERIFIED_FLOWER_VERSIONS,
    UnverifiedFlowerError,
    require_verified_flower,
)


def test_installed_flower_is_verified():
    assert flwr.__version__ in VERIFIED_FLOWER_VERSIONS
    require_verified_flower()


def test_another_version_fails_naming_it():
    with pytest.raises(UnverifiedFlowerError, match="flwr 1.43.0 is installed"):
        require_verified_flower("1.43.0")
