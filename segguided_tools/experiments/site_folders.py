"""Per-partition site folders: the pooled cases regrouped into sites as folders of symlinks.

A simulation with ``data-dir`` set gives partition ``i`` the ``i``-th site folder in
sorted order (``segguided_federation/site_data.py``), so site folders are named with zero-padded numbers
(``site-01``, ``site-02``, ...; ``fets-001``... for FeTS partitions) and each holds one
symlink per case folder. Nothing is copied: a BraTS pool stays where it is.

Layout under the results folder::

    data/synthetic/            the generated federation (synthetic data only)
    data/partitions/<name>/site-01/<case-id> -> <pool>/<case-id>
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from segguided_model.data.discovery import discover_cases
from segguided_model.data.layouts import CaseRecord
from segguided_model.data.partitions import (
    assign_by_partition,
    read_partition_csv,
    split_pool,
)
from segguided_model.data.synthetic import (
    brats_grid_with_largest_axis,
    ensure_federation,
)
from segguided_tools.experiments.grid import DataSpec, ExperimentGrid, PartitionSpec

log = logging.getLogger(__name__)


class SiteFolderError(ValueError):
    """The pool cannot be partitioned as the grid asks; the message names the partition or folder."""


@dataclass(frozen=True)
class PreparedData:
    """Where every partition's sites and the server's validation cases are.

    Attributes:
        site_dirs: partition name → its site folders, in the order simulations use them.
        validation_dir: the server's held-out cases (run-config ``server-validation-dir``).
    """

    site_dirs: dict[str, list[Path]]
    validation_dir: Path

    def partition_dir(self, name: str) -> Path:
        """The folder of a partition's site folders (run-config ``data-dir``)."""
        return self.site_dirs[name][0].parent

    def sites_per_partition(self) -> dict[str, int]:
        return {name: len(dirs) for name, dirs in self.site_dirs.items()}


def case_folder(case: CaseRecord) -> Path:
    """The folder that holds one case's files.

    Raises:
        SiteFolderError: the case is not a case folder (MSD layout keeps all cases in two folders).
    """
    if case.layout == "msd":
        raise SiteFolderError(
            f"case {case.case_id} is in MSD layout; partitioning needs one folder per case (BraTS layouts)"
        )
    return Path(next(iter(case.image_paths.values()))).parent


def _discover(folder: Path) -> list[CaseRecord]:
    cases = [case for case in discover_cases(folder).cases if case.has_label]
    if not cases:
        raise SiteFolderError(f"no labelled case found in {folder}")
    return cases


def write_site_folders(folder: Path, sites: dict[str, list[CaseRecord]]) -> list[Path]:
    """Replace ``folder`` with one sub-folder of case symlinks per site.

    Args:
        folder: the partition's folder; whatever it held before is removed.
        sites: site folder name → its cases. Sites without cases are left out.

    Returns:
        The site folders written, sorted by name.
    """
    if folder.exists():
        shutil.rmtree(folder)
    written = []
    for name, cases in sites.items():
        if not cases:
            log.warning("%s: site %s has no case and is left out", folder.name, name)
            continue
        site_dir = folder / name
        site_dir.mkdir(parents=True)
        for case in cases:
            source = case_folder(case).resolve()
            (site_dir / source.name).symlink_to(source, target_is_directory=True)
        written.append(site_dir)
    return sorted(written)


def _numbered(prefix: str, groups: list[list[CaseRecord]]) -> dict[str, list[CaseRecord]]:
    return {f"{prefix}-{index + 1:02d}": group for index, group in enumerate(groups)}


def partition_sites(
    spec: PartitionSpec, pool: list[CaseRecord], generated: list[list[CaseRecord]] | None
) -> dict[str, list[CaseRecord]]:
    """Group the pooled cases into named sites as ``spec`` says.

    Args:
        spec: the partition.
        pool: every labelled case.
        generated: the synthetic federation's own sites, for kind ``generated``.

    Raises:
        SiteFolderError: the partition cannot be made (too few cases, no generated sites,
            a FeTS file that matches no case).
    """
    if spec.kind == "generated":
        if generated is None:
            raise SiteFolderError(f"partition {spec.name!r}: kind 'generated' needs synthetic data")
        return _numbered("site", generated)
    if spec.kind in ("iid", "skewed"):
        try:
            groups = split_pool(pool, spec.sites or 0, spec.seed, skew=spec.skew if spec.kind == "skewed" else None)
        except ValueError as error:
            raise SiteFolderError(f"partition {spec.name!r}: {error}") from None
        return _numbered("site", groups)
    try:
        partitions = read_partition_csv(spec.csv)
    except (OSError, ValueError) as error:
        raise SiteFolderError(f"partition {spec.name!r}: {error}") from None
    if spec.partition_ids is not None:
        unknown = [p for p in spec.partition_ids if p not in partitions]
        if unknown:
            raise SiteFolderError(f"partition {spec.name!r}: partition-ids {unknown} are not in {spec.csv}")
        partitions = {p: partitions[p] for p in spec.partition_ids}
    assignment = assign_by_partition(pool, partitions)
    if assignment.missing_subjects:
        log.warning("partition %s: %d listed subject(s) have no case in the pool", spec.name, len(assignment.missing_subjects))
    width = max(3, len(max(assignment.sites, key=len)))
    return {f"fets-{pid.zfill(width)}": cases for pid, cases in assignment.sites.items()}


def prepare_data(grid: ExperimentGrid, results_dir: Path) -> PreparedData:
    """Generate (or find) the pool and write every partition's site folders.

    Raises:
        SiteFolderError: a partition has fewer than two non-empty sites, or the pool
            cannot be read.
    """
    data: DataSpec = grid.data
    generated = None
    if data.synthetic:
        federation = ensure_federation(
            results_dir / "data" / "synthetic",
            sites=data.synthetic_sites,
            cases=data.synthetic_cases_per_site,
            val_cases=data.synthetic_validation_cases,
            size=brats_grid_with_largest_axis(data.synthetic_size),
            seed=data.synthetic_seed,
        )
        generated = [_discover(site) for site in federation.site_dirs]
        pool = [case for site in generated for case in site]
        validation_dir = federation.validation_dir
    else:
        pool, validation_dir = _discover(Path(data.pool_dir)), Path(data.validation_dir)
        if not validation_dir.is_dir():
            raise SiteFolderError(f"[data] validation-dir {validation_dir} is not a folder")
    site_dirs = {}
    for spec in grid.partitions:
        sites = partition_sites(spec, pool, generated)
        written = write_site_folders(results_dir / "data" / "partitions" / spec.name, sites)
        if len(written) < 2:
            raise SiteFolderError(f"partition {spec.name!r} has {len(written)} non-empty site(s); a federation needs 2")
        site_dirs[spec.name] = written
    return PreparedData(site_dirs, validation_dir)
