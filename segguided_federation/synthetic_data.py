"""The synthetic federation a run uses when no ``data-dir`` is set, generated once and shared by the server and every client."""

from __future__ import annotations

from segguided_federation.run_config import RunConfig
from segguided_model.data.synthetic import (
    SyntheticFederation,
    brats_grid_with_largest_axis,
    ensure_federation,
)


def synthetic_federation(config: RunConfig) -> SyntheticFederation:
    """Generate the synthetic hospitals on first use and reuse them afterwards.

    Safe to call from the server and every client at once: generation is locked and the
    finished folder appears atomically.
    """
    return ensure_federation(
        config.synthetic_root(),
        sites=config.synthetic_sites,
        cases=config.synthetic_cases_per_site,
        val_cases=config.synthetic_validation_cases,
        size=brats_grid_with_largest_axis(config.synthetic_size),
        seed=config.seed,
    )
