"""A PNG a clinician can read: central slices of the image, the prediction and the attention maps."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from segguided_model.data.layouts import MODALITIES  # noqa: E402
from segguided_model.labels import SUBREGIONS  # noqa: E402

SUBREGION_COLOURS: dict[str, str] = {"NCR": "#d62728", "ED": "#2ca02c", "ET": "#ffd700"}
"""Overlay colour of each sub-region (red necrosis, green oedema, yellow enhancing)."""

_PLANES = ("axial", "coronal", "sagittal")


def _slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """A 2D view of a RAS volume ``(X, Y, Z)`` with the patient's up or front upwards."""
    if plane == "axial":
        view = volume[:, :, index]  # X right, Y anterior up
    elif plane == "coronal":
        view = volume[:, index, :]  # X right, Z superior up
    else:
        view = volume[index, :, :]  # Y anterior right, Z superior up
    return view.T


def _aspect(spacing: Sequence[float], plane: str) -> float:
    horizontal, vertical = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[plane]
    return float(spacing[vertical]) / float(spacing[horizontal])


def write_overlay(
    path: str | Path,
    image: torch.Tensor | np.ndarray,
    regions: torch.Tensor | np.ndarray,
    attention_maps: torch.Tensor | np.ndarray | None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    title: str = "",
) -> Path:
    """Draw axial, coronal and sagittal slices through the predicted tumour's centre.

    Columns: FLAIR, T1c, the prediction (NCR red, oedema green, enhancing yellow) over
    FLAIR, then one heat map per attention map. Slices pass through the centre of mass
    of the predicted whole tumour, or the volume's centre when nothing is predicted.
    Views are in neurological convention (patient's right on the image's right).

    Args:
        path: the PNG to write.
        image: preprocessed image ``(4, X, Y, Z)`` in RAS orientation, MODALITIES order.
        regions: boolean region masks ``(3, X, Y, Z)`` (ET, TC, WT).
        attention_maps: ``(3, X, Y, Z)`` in [0, 1] (NCR, ED, ET), or ``None``.
        spacing: voxel size in mm along X, Y, Z.
        title: figure title (e.g. the case id).

    Returns:
        ``path``.
    """
    image = np.asarray(torch.as_tensor(image).float().cpu())
    regions = np.asarray(torch.as_tensor(regions).bool().cpu())
    enhancing, core, whole = regions[0], regions[1] | regions[0], regions[2] | regions[1] | regions[0]
    # 0 background, then SUBREGIONS order: NCR = core not ET, ED = whole not core, ET.
    coded = np.zeros(whole.shape, dtype=np.uint8)
    coded[whole & ~core] = 1 + SUBREGIONS.index("ED")
    coded[core & ~enhancing] = 1 + SUBREGIONS.index("NCR")
    coded[enhancing] = 1 + SUBREGIONS.index("ET")
    centre = (
        np.round(np.argwhere(whole).mean(axis=0)).astype(int)
        if whole.any()
        else np.array(whole.shape) // 2
    )
    maps = None if attention_maps is None else np.asarray(torch.as_tensor(attention_maps).float().cpu())
    flair, t1c = image[MODALITIES.index("flair")], image[MODALITIES.index("t1c")]
    columns = ["FLAIR", "T1c", "prediction"] + ([f"attention {name}" for name in SUBREGIONS] if maps is not None else [])
    label_colours = ListedColormap(["none"] + [SUBREGION_COLOURS[name] for name in SUBREGIONS])

    figure, axes = plt.subplots(
        len(_PLANES), len(columns), figsize=(2.6 * len(columns), 2.8 * len(_PLANES)), squeeze=False, layout="constrained"
    )
    for row, plane in enumerate(_PLANES):
        index = int(centre[{"axial": 2, "coronal": 1, "sagittal": 0}[plane]])
        aspect = _aspect(spacing, plane)
        background = _slice(flair, plane, index)
        grey = dict(cmap="gray", origin="lower", aspect=aspect, interpolation="nearest")
        axes[row, 0].imshow(background, **grey)
        axes[row, 1].imshow(_slice(t1c, plane, index), **grey)
        axes[row, 2].imshow(background, **grey)
        axes[row, 2].imshow(
            _slice(coded, plane, index), cmap=label_colours, vmin=0, vmax=len(SUBREGIONS),
            origin="lower", aspect=aspect, interpolation="nearest", alpha=0.5,
        )
        if maps is not None:
            for channel in range(len(SUBREGIONS)):
                axes[row, 3 + channel].imshow(background, **grey)
                heat = axes[row, 3 + channel].imshow(
                    _slice(maps[channel], plane, index), cmap="inferno", vmin=0, vmax=1,
                    origin="lower", aspect=aspect, alpha=0.6, interpolation="nearest",
                )
        axes[row, 0].set_ylabel(f"{plane} {index}")
        for column, name in enumerate(columns):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
            if row == 0:
                axes[row, column].set_title(name, fontsize=10)
    figure.legend(
        handles=[Patch(color=SUBREGION_COLOURS[name], label=name) for name in SUBREGIONS],
        loc="outside lower center", ncol=len(SUBREGIONS), frameon=False,
    )
    if maps is not None:
        figure.colorbar(heat, ax=axes[:, 3:].ravel().tolist(), shrink=0.6, label="attention")
    figure.suptitle(f"{title}  (neurological view: patient's right on the right)".strip())
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
