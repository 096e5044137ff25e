"""The Flower versions our secure aggregation is verified against, checked at start.

The secure-aggregation workflow and client mod reuse Flower's SecAgg+ stages (key
agreement, Shamir sharing, message layout) and replace its mask generator and encoding.
Those internals change between Flower releases without notice, so a run on any other
version is refused before a round starts instead of silently mixing the two protocols.
"""

from __future__ import annotations

import flwr

VERIFIED_FLOWER_VERSIONS = ("1.42.0",)


class UnverifiedFlowerError(RuntimeError):
    """The installed Flower is not one secure aggregation was verified against."""


def require_verified_flower(installed: str | None = None) -> None:
    """Raise ``UnverifiedFlowerError`` unless Flower's version is in ``VERIFIED_FLOWER_VERSIONS``.

    Args:
        installed: the version to check; ``flwr.__version__`` when omitted.
    """
    version = installed if installed is not None else flwr.__version__
    if version not in VERIFIED_FLOWER_VERSIONS:
        raise UnverifiedFlowerError(
            f"secure aggregation is verified against flwr {', '.join(VERIFIED_FLOWER_VERSIONS)}, "
            f"but flwr {version} is installed; install a verified version or set "
            "secure-aggregation=false"
        )
