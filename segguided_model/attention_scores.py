"""How well the attention maps explain: the Dice of each thresholded map against every sub-region.

The SegAttentionGate's NCR, ED and ET maps claim to show where the network sees each
sub-region. A map explains only if, thresholded, it overlaps its own sub-region and not
the others: the NCR map the necrotic centre, not the whole core; the ET map the enhancing
rim. ``attention_scores`` gives the full 3×3 table (map × sub-region) per case, with the
BraTS empty-region policy of ``metrics.region_dice`` (both empty → 1).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from segguided_model.labels import SUBREGIONS
from segguided_model.metrics import region_dice

ATTENTION_THRESHOLD = 0.5

ATTENTION_DICE_KEYS: tuple[str, ...] = tuple(f"attention-dice-{name.lower()}" for name in SUBREGIONS)
"""Each map against its own sub-region: ``attention-dice-ncr``, ``-ed``, ``-et``."""
CROSS_KEYS: tuple[str, ...] = tuple(
    f"attention-{name.lower()}-on-{other.lower()}" for name in SUBREGIONS for other in SUBREGIONS if other != name
)
"""Each map against each other sub-region, e.g. ``attention-ncr-on-et``: the NCR map's Dice with ET."""
ATTENTION_KEYS: tuple[str, ...] = ATTENTION_DICE_KEYS + CROSS_KEYS


def attention_scores(
    maps: torch.Tensor, subregions: torch.Tensor, threshold: float = ATTENTION_THRESHOLD
) -> dict[str, float]:
    """Dice of every thresholded attention map against every ground-truth sub-region.

    Args:
        maps: attention maps ``(3, D, H, W)`` in [0, 1], ``SUBREGIONS`` order (NCR, ED, ET).
        subregions: ground-truth masks ``(3, D, H, W)``, same order, bool or {0, 1}.
        threshold: a map voxel counts as attended above this.

    Returns:
        ``ATTENTION_KEYS`` → Dice.

    Raises:
        ValueError: the shapes differ or are not ``(3, D, H, W)``.
    """
    if maps.shape != subregions.shape or maps.ndim != 4 or maps.shape[0] != len(SUBREGIONS):
        raise ValueError(
            f"expected maps and subregions of one shape (3, D, H, W), got {tuple(maps.shape)} and {tuple(subregions.shape)}"
        )
    attended = maps.float() > threshold
    truth = subregions.bool()
    scores = {}
    for index, name in enumerate(SUBREGIONS):
        for other_index, other in enumerate(SUBREGIONS):
            key = f"attention-dice-{name.lower()}" if index == other_index else f"attention-{name.lower()}-on-{other.lower()}"
            scores[key] = region_dice(attended[index], truth[other_index])
    return scores


def mean_attention_scores(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each attention score over the rows that have them (empty when none has)."""
    rows = [row for row in rows if ATTENTION_DICE_KEYS[0] in row]
    if not rows:
        return {}
    return {key: sum(float(row[key]) for row in rows) / len(rows) for key in ATTENTION_KEYS}
