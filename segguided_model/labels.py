"""BraTS label conventions and tumour regions, declared as data in one place.

Every dataset release writes tumour sub-regions with its own integer values. Everything
else in the project works on two channel stacks that do not depend on the release:

* **sub-regions** ``(NCR, ED, ET)``: necrotic / non-enhancing core, oedema, enhancing
  tumour. These supervise the attention gates.
* **regions** ``(ET, TC, WT)``: the nested BraTS evaluation regions, ET ⊂ TC ⊂ WT, with
  TC = NCR ∪ ET and WT = NCR ∪ ED ∪ ET. The network predicts these.

Label values that belong to no tumour region (BraTS 2024's resection cavity) map to no
sub-region: they count as background for every region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

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


def detect_convention(label_values: set[int]) -> LabelConvention:
    """Guess the convention from the label values present in one or more segmentations.

    ET=4 without 3 means BraTS 2021; 3 without 4 means BraTS 2023. Values {1, 2} alone
    are ambiguous between releases with the same NCR/ED codes, and read as BraTS 2023.
    Both 3 and 4 present means BraTS 2024 (4 = resection cavity). MSD cannot be told
    apart from BraTS 2023 by values; its layout decides (see ``data.discovery``).

    Raises:
        ValueError: when the values fit no convention.
    """
    values = set(label_values)
    if 4 in values and 3 not in values:
        name = "brats2021"
    elif 4 in values:
        name = "brats2024"
    else:
        name = "brats2023"
    convention = CONVENTIONS[name]
    unknown = values - convention.allowed_values
    if unknown:
        raise ValueError(
            f"label values {sorted(values)} fit no known convention "
            f"(values {sorted(unknown)} are undefined in every BraTS release)"
        )
    return convention


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


def label_map_from_regions(regions: torch.Tensor, convention: LabelConvention) -> torch.Tensor:
    """Write predicted regions back as a label map in ``convention``.

    The nesting ET ⊂ TC ⊂ WT is enforced first (a voxel predicted ET is also TC and WT),
    then ET voxels get the ET label, TC-but-not-ET the NCR label and WT-but-not-TC the
    oedema label.

    Args:
        regions: boolean or {0, 1} tensor ``(3, *S)`` in ``REGIONS`` order.
        convention: the dataset's own label convention.

    Returns:
        ``torch.uint8`` label map ``(*S)``.
    """
    if regions.shape[0] != len(REGIONS):
        raise ValueError(f"expected {len(REGIONS)} region channels (ET, TC, WT), got {regions.shape[0]}")
    enhancing = regions[0].bool()
    core = regions[1].bool() | enhancing
    whole = regions[2].bool() | core
    label = torch.zeros(regions.shape[1:], dtype=torch.uint8, device=regions.device)
    label[whole] = convention.value_of("ED")
    label[core] = convention.value_of("NCR")
    label[enhancing] = convention.value_of("ET")
    return label
