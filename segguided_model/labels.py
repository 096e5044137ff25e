"""BraTS label conventions and tumour regions, declared as data in one place.

Every dataset release writes tumour sub-regions with its own integer values. Everything
else in the project works on two channel stacks that do not depend on the release:

* **sub-regions** ``(NCR, ED, ET)``: necrotic / non-enhancing core, oedema, enhancing
  tumour. These supervise the attention gates.
* **regions** ``(ET, TC, WT)``: the nested BraTS evaluation regions, ET ⊂ TC ⊂ WT, with
  TC = NCR ∪ ET and WT = NCR ∪ ED ∪ ET. The network predicts these.

Label values that belong to no tumour region (BraTS 2024's resection cavity) map to no
sub-region: they count as background for every region.

A folder of segmentations is read in one convention, declared by its owner or decided
once from all its label values (``decide_convention``), never guessed case by case: the
same value means enhancing tumour in BraTS 2021 and resection cavity in BraTS 2024.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

SUBREGIONS: tuple[str, ...] = ("NCR", "ED", "ET")
"""Channel order of sub-region masks and attention maps."""

REGIONS: tuple[str, ...] = ("ET", "TC", "WT")
"""Channel order of region masks and network outputs."""

REGION_MEMBERS: Mapping[str, tuple[str, ...]] = {
    "ET": ("ET",),
    "TC": ("NCR", "ET"),
    "WT": ("NCR", "ED", "ET"),
}
"""Which sub-regions make up each evaluation region."""


@dataclass(frozen=True)
class LabelConvention:
    """How one dataset release encodes tumour sub-regions as integer labels.

    Attributes:
        name: identifier used on the command line and in configs (``brats2021``...).
        description: one line for humans.
        values: every label value that may appear, mapped to the sub-region it encodes,
            or to ``None`` for background and for labels outside every tumour region.
    """

    name: str
    description: str
    values: Mapping[int, str | None]

    def value_of(self, subregion: str) -> int:
        """The label value that encodes ``subregion`` in this convention."""
        for value, name in self.values.items():
            if name == subregion:
                return value
        raise ValueError(f"convention {self.name!r} has no label for sub-region {subregion!r}")

    @property
    def allowed_values(self) -> frozenset[int]:
        return frozenset(self.values)


CONVENTIONS: Mapping[str, LabelConvention] = {
    convention.name: convention
    for convention in (
        LabelConvention(
            "brats2021",
            "BraTS 2018-2021: 1 necrotic core, 2 oedema, 4 enhancing tumour",
            {0: None, 1: "NCR", 2: "ED", 4: "ET"},
        ),
        LabelConvention(
            "brats2023",
            "BraTS 2023 GLI and later pre-treatment: 1 NCR, 2 oedema, 3 enhancing tumour",
            {0: None, 1: "NCR", 2: "ED", 3: "ET"},
        ),
        LabelConvention(
            "brats2024",
            "BraTS 2024+ post-treatment: 1 NETC, 2 SNFH, 3 ET, 4 resection cavity (no region)",
            {0: None, 1: "NCR", 2: "ED", 3: "ET", 4: None},
        ),
        LabelConvention(
            "msd",
            "Medical Segmentation Decathlon Task01: 1 oedema, 2 non-enhancing tumour, 3 enhancing",
            {0: None, 1: "ED", 2: "NCR", 3: "ET"},
        ),
    )
}


def get_convention(name: str) -> LabelConvention:
    """Look a convention up by name, with an error that lists the known ones."""
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown label convention {name!r}; expected one of {sorted(CONVENTIONS)}"
        ) from None


def _unique_values(label: np.ndarray | torch.Tensor) -> set[int]:
    if isinstance(label, torch.Tensor):
        return {int(v) for v in torch.unique(label).tolist()}
    return {int(v) for v in np.unique(label).tolist()}


def check_labels(label: np.ndarray | torch.Tensor, convention: LabelConvention) -> None:
    """Raise ``ValueError`` naming the values that ``convention`` does not define."""
    unknown = _unique_values(label) - convention.allowed_values
    if unknown:
        raise ValueError(
            f"label values {sorted(unknown)} are not defined by convention "
            f"{convention.name!r} (allowed: {sorted(convention.allowed_values)})"
        )


def fitting_conventions(values: Iterable[int], candidates: Sequence[str] | None = None) -> tuple[str, ...]:
    """The conventions among ``candidates`` (default: all, in ``CONVENTIONS`` order) that define every value.

    Raises:
        ValueError: a candidate is not a known convention.
    """
    present = set(values)
    names = tuple(CONVENTIONS) if candidates is None else tuple(candidates)
    return tuple(name for name in names if present <= get_convention(name).allowed_values)


def equivalent_conventions(name: str, values: Iterable[int]) -> frozenset[str]:
    """Every convention that reads ``values`` exactly as ``name`` does.

    Two conventions read a set of values alike when each defines every value and maps it
    to the same sub-region (or to none): BraTS 2023 and 2024 read {0, 1, 2, 3} alike, BraTS
    2021 and 2024 do not read 4 alike, MSD and BraTS 2023 do not read 1 and 2 alike.

    Raises:
        ValueError: ``name`` is unknown or does not define every value.
    """
    convention = get_convention(name)
    present = set(values)
    check_labels(np.array(sorted(present), dtype=np.int64), convention)
    return frozenset(
        other.name
        for other in CONVENTIONS.values()
        if present <= other.allowed_values and all(other.values[v] == convention.values[v] for v in present)
    )


@dataclass(frozen=True)
class ConventionDecision:
    """Which label convention a folder of segmentations uses, decided once for all of them.

    Attributes:
        convention: the convention's name, or ``None`` when the labels cannot decide it.
        explanation: why, in one sentence; when undecided it names the cases that disagree.
    """

    convention: str | None
    explanation: str


def decide_convention(candidates: Sequence[str], values_by_case: Mapping[str, Iterable[int]]) -> ConventionDecision:
    """Decide the one label convention of a folder from the label values of all its cases.

    Never case by case: every case is read in the convention decided here, or none is.

    1. No labels: the first candidate (the layout's default).
    2. The first candidate, if every case fits it.
    3. Otherwise the first candidate every case fits, provided at least one case can be
       read no other way (up to conventions that read the folder's values alike): e.g. a
       case with both 3 and 4 proves BraTS 2024, so its cavity-only cases {0, 2, 4} are
       BraTS 2024 too, not BraTS 2021.
    4. Otherwise undecided: the cases disagree (no convention fits all), or they all fit a
       convention that nothing proves (BraTS 2021-like {0, 1, 2, 4} and BraTS 2023-like
       {0, 1, 2, 3} cases fit only BraTS 2024 together, which would silently turn the
       first ones' enhancing tumour into resection cavity).

    Args:
        candidates: convention names the folder may hold, its default first (a layout's
            ``conventions``).
        values_by_case: case id → the label values of its segmentation.

    Raises:
        ValueError: ``candidates`` is empty or names an unknown convention.
    """
    if not candidates:
        raise ValueError("decide_convention needs at least one candidate convention")
    default = candidates[0]
    if not values_by_case:
        return ConventionDecision(default, f"no segmentation to read; the layout's default {default}")
    fits = {case: fitting_conventions(values, candidates) for case, values in sorted(values_by_case.items())}
    common = [name for name in candidates if all(name in fit for fit in fits.values())]
    if common and common[0] == default:
        return ConventionDecision(default, f"every segmentation fits the layout's default {default}")
    if common:
        choice = common[0]
        present: set[int] = set().union(*(set(values) for values in values_by_case.values()))
        alike = equivalent_conventions(choice, present)
        witness = next((case for case, fit in fits.items() if set(fit) <= alike), None)
        if witness is not None:
            return ConventionDecision(
                choice, f"every segmentation fits {choice}, and case {witness} can be read no other way"
            )
    return ConventionDecision(None, _disagreement(fits, common))


def _disagreement(fits: Mapping[str, tuple[str, ...]], common: Sequence[str]) -> str:
    """Why the labels decide nothing, naming up to two cases per reading."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for case, fit in fits.items():
        groups.setdefault(tuple(sorted(fit)), []).append(case)
    parts = []
    for fit, cases in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        more = f" and {len(cases) - 2} more" if len(cases) > 2 else ""
        readings = " or ".join(fit) if fit else "no candidate convention"
        parts.append(f"{len(cases)} case(s) read as {readings} ({', '.join(cases[:2])}{more})")
    if common:
        why = f"only {common[0]} fits every segmentation and no case proves it"
    else:
        why = "no convention fits every segmentation"
    return f"the labels cannot decide the convention: {why}; {'; '.join(parts)}"


def subregion_masks(label: torch.Tensor, convention: LabelConvention) -> torch.Tensor:
    """Split a label map into sub-region masks.

    Args:
        label: integer label map ``(D, H, W)`` or ``(1, D, H, W)``.
        convention: how ``label`` encodes sub-regions.

    Returns:
        Boolean tensor ``(3, *S)`` in ``SUBREGIONS`` order (NCR, ED, ET); a leading
        singleton channel of ``label`` is dropped first.

    Raises:
        ValueError: if ``label`` holds values the convention does not define.
    """
    check_labels(label, convention)
    if label.ndim == 4 and label.shape[0] == 1:
        label = label[0]
    masks = torch.zeros((len(SUBREGIONS), *label.shape), dtype=torch.bool, device=label.device)
    for value, subregion in convention.values.items():
        if subregion is not None:
            masks[SUBREGIONS.index(subregion)] |= label == value
    return masks


def regions_from_subregions(subregions: torch.Tensor, channel_dim: int = 0) -> torch.Tensor:
    """Combine sub-region masks (NCR, ED, ET) into regions (ET, TC, WT).

    Args:
        subregions: masks ``(3, *S)``, or ``(B, 3, *S)`` with ``channel_dim=1``.
        channel_dim: the dimension holding the three sub-regions.

    Returns:
        Boolean tensor of the same shape in ``REGIONS`` order.
    """
    channels = subregions.unbind(channel_dim)
    by_name = dict(zip(SUBREGIONS, channels))
    regions = []
    for region in REGIONS:
        members = [by_name[name] for name in REGION_MEMBERS[region]]
        mask = members[0].bool()
        for member in members[1:]:
            mask = mask | member.bool()
        regions.append(mask)
    return torch.stack(regions, dim=channel_dim)


def region_masks(label: torch.Tensor, convention: LabelConvention) -> torch.Tensor:
    """Label map ``(*S)`` to boolean region masks ``(3, *S)`` in ``REGIONS`` order (ET, TC, WT)."""
    return regions_from_subregions(subregion_masks(label, convention))


def nest_regions(regions: torch.Tensor) -> torch.Tensor:
    """Enforce ET ⊂ TC ⊂ WT on predicted regions: a voxel predicted ET is also TC, one predicted TC also WT.

    What ``segment`` writes and what central and federated validation score: both go
    through this one function, so the metrics describe the label maps users get.

    Args:
        regions: boolean or {0, 1} tensor ``(3, *S)`` in ``REGIONS`` order (ET, TC, WT).

    Returns:
        Boolean tensor ``(3, *S)``, nested.

    Raises:
        ValueError: the first dimension is not the three regions.
    """
    if regions.ndim < 1 or regions.shape[0] != len(REGIONS):
        raise ValueError(f"expected {len(REGIONS)} region channels (ET, TC, WT) first, got shape {tuple(regions.shape)}")
    enhancing = regions[0].bool()
    core = regions[1].bool() | enhancing
    whole = regions[2].bool() | core
    return torch.stack([enhancing, core, whole])


def label_map_from_regions(regions: torch.Tensor, convention: LabelConvention) -> torch.Tensor:
    """Write predicted regions back as a label map in ``convention``.

    The regions are nested first (``nest_regions``), then ET voxels get the ET label,
    TC-but-not-ET the NCR label and WT-but-not-TC the oedema label.

    Args:
        regions: boolean or {0, 1} tensor ``(3, *S)`` in ``REGIONS`` order.
        convention: the dataset's own label convention.

    Returns:
        ``torch.uint8`` label map ``(*S)``.
    """
    enhancing, core, whole = nest_regions(regions)
    label = torch.zeros(regions.shape[1:], dtype=torch.uint8, device=regions.device)
    label[whole] = convention.value_of("ED")
    label[core] = convention.value_of("NCR")
    label[enhancing] = convention.value_of("ET")
    return label
