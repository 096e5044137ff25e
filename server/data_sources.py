"""Where a run's data comes from: the synthetic federation, or folders the operator names."""

from __future__ import annotations

import logging
from pathlib import Path

from segguided_model.data.layouts import CaseRecord
from segguided_model.data.qa import run_qa
from segguided_model.data.synthetic import SyntheticFederation, ensure_federation
from server.config import RunConfig

log = logging.getLogger(__name__)


class DataSourceError(RuntimeError):
    """The configured data cannot be found or holds no usable case."""


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
        size=(config.synthetic_size,) * 3,
        seed=config.seed,
    )


def central_validation_cases(config: RunConfig) -> list[CaseRecord]:
    """The server's held-out cases, after the QA gate.

    Raises:
        DataSourceError: no validation folder is configured, or none of its cases passes QA.
    """
    if config.server_validation_dir:
        folder = Path(config.server_validation_dir).expanduser()
    elif config.uses_synthetic_data:
        folder = synthetic_federation(config).validation_dir
    else:
        raise DataSourceError(
            "data-dir points at real site data, so set server-validation-dir to the server's "
            "own held-out cases"
        )
    report = run_qa(folder)
    for case_id, reason in report.rejected:
        log.warning("central validation: skipping case %s: %s", case_id, reason)
    labelled = [case for case in report.valid if case.has_label]
    if not labelled:
        raise DataSourceError(f"no labelled case in {folder} passed the QA gate ({len(report.rejected)} rejected)")
    log.info("central validation on %d case(s) from %s", len(labelled), folder)
    return labelled
