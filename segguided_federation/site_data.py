"""Which data a client trains on: its site folder, passed through the QA gate and split.

In deployment the SuperNode's ``--node-config`` names the folder (``data-path``) and may
declare the site's label convention (``label-convention``); in simulation the site
follows from ``partition-id`` (the visible sub-folders of ``data-dir``, sorted). A
``SiteError`` reaches the server, so its message carries the site id and QA reason
counts (``QAReport.summary()``), never a path.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from segguided_federation.metric_keys import SITE_ID_PATTERN, SITE_ID_RULE
from segguided_federation.redaction import RedactedError
from segguided_federation.run_config import RunConfig, default_cache_dir
from segguided_federation.synthetic_data import synthetic_federation
from segguided_model.data.entries import visible_entries
from segguided_model.data.layouts import CaseRecord
from segguided_model.data.qa import DECLARE_HINT, run_qa
from segguided_model.data.split import split_cases
from segguided_model.labels import CONVENTIONS

LABEL_CONVENTION_KEY = "label-convention"
"""Node-config key (a site config's ``label-convention``) declaring the site's label convention."""

log = logging.getLogger(__name__)


class SiteError(RedactedError, RuntimeError):
    """The site's data cannot be used: ``public`` says why by rule, ``private`` names the folder and counts."""


@dataclass(frozen=True)
class Site:
    """One hospital's usable data.

    Attributes:
        site_id: the name this site reports under (never a path or patient data).
        data_dir: its data folder.
        training_cases: labelled cases that passed QA, for training.
        validation_cases: labelled cases that passed QA, for federated evaluation.
        rejected: ``(case id, reason)`` for every case the QA gate skipped.
        cache_dir: where its QA results and preprocessed volumes are kept (``site_cache_dir``).
    """

    site_id: str
    data_dir: Path
    training_cases: list[CaseRecord]
    validation_cases: list[CaseRecord]
    rejected: list[tuple[str, str]]
    cache_dir: Path


def site_cache_dir(data_dir: Path, configured: str | Path | None = None) -> Path:
    """Where a site's QA results and preprocessed volumes are kept.

    ``configured`` (a site config's ``cache-dir``) when given, else
    ``$SEGGUIDED_CACHE/sites/<folder name>-<first 8 hex digits of SHA-256 of its absolute
    path>`` (``~/.cache/segguided-fl/sites/...``): one folder per data folder, so that
    ``segguided qa DATA`` and the SuperNode training on ``DATA`` share it. Everything in
    it is derived from the site's images and stays on the site's machine.
    """
    if configured:
        return Path(str(configured)).expanduser()
    data_dir = Path(data_dir).expanduser().absolute()
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:8]
    return default_cache_dir() / "sites" / f"{data_dir.name}-{digest}"


def folder_site_id(name: str) -> str:
    """A data folder's name as a site id (``metric_keys.SITE_ID_PATTERN``), the default when none is configured.

    Characters outside ``[A-Za-z0-9._-]`` become ``-`` (``"Hospital A"`` → ``"Hospital-A"``),
    leading ``.``, ``_`` and ``-`` are dropped, and the id is cut to 63 characters;
    ``"site"`` if nothing is left.
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-")[:63]
    return cleaned or "site"


def _site_folder(node_config: Mapping[str, Any], config: RunConfig) -> tuple[str, Path, Path]:
    if "data-path" in node_config:
        data_dir = Path(str(node_config["data-path"])).expanduser()
        site_id = str(node_config.get("site-id", folder_site_id(data_dir.name)))
        if not SITE_ID_PATTERN.fullmatch(site_id):
            raise SiteError(f"node config site-id={site_id!r} is not a site id: {SITE_ID_RULE}")
        return site_id, data_dir, site_cache_dir(data_dir, node_config.get("cache-dir"))
    if "partition-id" not in node_config:
        raise SiteError("node config has neither data-path (deployment) nor partition-id (simulation)")
    partition = int(node_config["partition-id"])
    partitions = int(node_config.get("num-partitions", partition + 1))
    if config.uses_synthetic_data:
        if partitions != config.synthetic_sites:
            raise SiteError(
                f"the simulation has {partitions} SuperNodes but run config synthetic-sites="
                f"{config.synthetic_sites}; pass --run-config \"synthetic-sites={partitions}\""
            )
        folder = synthetic_federation(config).site_dirs[partition]
        return folder_site_id(folder.name), folder, folder.parent / "cache" / folder.name
    sites = simulation_site_folders(Path(config.data_dir).expanduser())
    if partition >= len(sites):
        raise SiteError(f"data-dir {config.data_dir} has {len(sites)} site folders; partition {partition} has none")
    return folder_site_id(sites[partition].name), sites[partition], site_cache_dir(sites[partition])


def simulation_site_folders(data_dir: Path) -> list[Path]:
    """A simulation's site folders in partition order: the visible sub-folders of ``data_dir``, sorted by name.

    Hidden folders (``.ipynb_checkpoints``, ``__MACOSX``) are no site (``data.entries``).
    """
    return [entry for entry in visible_entries(data_dir) if entry.is_dir()]


def declared_convention(node_config: Mapping[str, Any], site_id: str) -> str | None:
    """The label convention the node config declares (``label-convention``), or ``None``.

    Raises:
        SiteError: the value is not a known convention (names the key and the choices).
    """
    value = node_config.get(LABEL_CONVENTION_KEY)
    if value is None or str(value) == "":
        return None
    if str(value) not in CONVENTIONS:
        raise SiteError(
            f"{site_id}: node config {LABEL_CONVENTION_KEY}={value!r} is not a label convention; "
            f"expected one of {sorted(CONVENTIONS)}"
        )
    return str(value)


def load_site(node_config: Mapping[str, Any], config: RunConfig) -> Site:
    """Find this client's site, run the QA gate over it (with its declared convention) and split it.

    Raises:
        SiteError: the declared convention is unknown, or no usable labelled case is left
            after QA (the message counts the reasons, without paths).
    """
    site_id, data_dir, cache_dir = _site_folder(node_config, config)
    report = run_qa(data_dir, convention=declared_convention(node_config, site_id), cache_dir=cache_dir)
    log.info("%s: QA gate: %s", site_id, report.reuse_line())
    for case_id, reason in report.rejected:
        log.warning("%s: QA skipped case %s: %s (%s)", site_id, case_id, reason, report.details[case_id])
    labelled = report.trainable
    if not labelled:
        summary = report.summary()
        reasons = ", ".join(f"{reason} {count}" for reason, count in summary["rejected-by-reason"].items())
        undecided = "label-convention-undecided" in report.summary()["rejected-by-reason"]
        log.error("%s: no labelled case in %s passed the QA gate; run `segguided qa %s`", site_id, data_dir, data_dir)
        raise SiteError(
            f"{site_id}: no labelled case passed the QA gate; run `segguided qa` on the site's data folder"
            + (f"; {DECLARE_HINT}" if undecided else ""),
            f"data folder {data_dir}, {summary['rejected']} case(s) rejected ({reasons or '-'}), "
            f"{summary['stray-entries']} stray entries",
        )
    training, validation = split_cases(labelled, config.validation_fraction, config.seed)
    return Site(site_id, data_dir, list(training), list(validation), list(report.rejected), cache_dir)
