"""Why the attention maps show a checkerboard and why NCR and ET light up alike: measure it.

Two measurements of the last decoder stage's maps (``predict_volume``) on labelled cases:

* checkerboard: the share of a map's variance (inside the tumour's box, dilated by 8
  voxels) at the highest spatial frequencies (above 0.4 cycles/voxel along any axis;
  a period-2 pattern lives at 0.5). Smooth maps score near 0.
* explanation: ``attention_scores`` (each map thresholded at 0.5 against each sub-region).

``--checkpoint`` measures a trained model; ``--train`` trains variants centrally from the
same seed for the same steps (``--steps``, measured also at half way) and measures each:
``VARIANT`` is ``UPSAMPLE:LAMBDA[:OPTION...]``, e.g. ``transposed:0.1 trilinear:0.1
trilinear:0.1:zero-bias trilinear:0.1:detached trilinear:0.1:hidden8``. ``hiddenN``: the
gates read their maps through a hidden layer of N channels (``model-gate-hidden-channels``).
Other options, diagnostic only (not model settings): ``zero-bias``: the maps' bias starts at 0, maps at 0.5, as before issue 18,
instead of ``attention.MAP_PRIOR``; ``detached``: the gates multiply the features by
detached maps, so that the maps learn from the attention loss alone, never from the
segmentation loss through the gate (plain autograd instead of ``gate_function``).
Writes a Markdown table to ``--out``.

    python benchmarks/attention_maps.py --data DIR --checkpoint runs/x/final.pt --out results.md
    python benchmarks/attention_maps.py --data DIR --train transposed:0.1 trilinear:0.1 --steps 300 --out results.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import segguided_model.attention as attention
from segguided_federation.local_training import train_local_round
from segguided_federation.run_config import RunConfig
from segguided_model.attention_scores import mean_attention_scores
from segguided_model.checkpoint import load_checkpoint
from segguided_model.data.discovery import discover_cases
from segguided_model.data.pipeline import build_eval_dataset
from segguided_model.evaluation import evaluate_volumes
from segguided_model.gate_function import segmentation_gate
from segguided_model.inference import SlidingWindow, predict_volume
from segguided_model.labels import SUBREGIONS
from segguided_model.network import SegGuidedNet

HIGH_FREQUENCY = 0.4
"""Cycles per voxel above which power counts as checkerboard (Nyquist: 0.5)."""


def high_frequency_share(volume: np.ndarray) -> float:
    """Share of ``volume``'s variance at frequencies above ``HIGH_FREQUENCY`` along any axis."""
    power = np.abs(np.fft.fftn(volume - volume.mean())) ** 2
    frequencies = np.meshgrid(*(np.abs(np.fft.fftfreq(n)) for n in volume.shape), indexing="ij")
    high = np.maximum.reduce(frequencies) > HIGH_FREQUENCY
    total = power.sum()
    return float(power[high].sum() / total) if total > 0 else 0.0


def detached_gate(features, map_weight, map_bias, gate_weight, readout=None):
    """``gate_function.segmentation_gate`` with the maps detached where they gate the features."""
    map_logits = F.conv3d(features if readout is None else readout, map_weight, map_bias)
    maps = torch.sigmoid(map_logits)
    return features * (1 + F.conv3d(maps.detach(), gate_weight)), maps, map_logits


def measure(model: torch.nn.Module, volumes, window: SlidingWindow) -> dict[str, float]:
    """Mean checkerboard share per map, mean attention scores and mean region Dice over ``volumes``."""
    shares = {name: [] for name in SUBREGIONS}
    for volume in volumes:
        maps = predict_volume(model, volume["image"], window).attention_maps.numpy()
        whole = np.asarray(volume["subregions"]).any(axis=0)
        corners = np.argwhere(whole)
        low, high = np.maximum(corners.min(0) - 8, 0), corners.max(0) + 9
        box = tuple(slice(a, b) for a, b in zip(low, high))
        for index, name in enumerate(SUBREGIONS):
            shares[name].append(high_frequency_share(maps[index][box]))
    rows, means = evaluate_volumes(model, volumes, window, torch.device("cpu"))
    return {
        **{f"checkerboard-{name.lower()}": float(np.mean(values)) for name, values in shares.items()},
        **mean_attention_scores(rows),
        "dice-mean": means["dice-mean"], "dice-et": means["dice-et"],
    }


COLUMNS = ("checkerboard-ncr", "checkerboard-ed", "checkerboard-et", "attention-dice-ncr", "attention-ncr-on-et",
           "attention-dice-et", "attention-et-on-ncr", "attention-dice-ed", "dice-mean", "dice-et")


def table(rows: list[tuple[str, dict[str, float]]]) -> str:
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    lines += [f"| {name} | " + " | ".join(f"{m[c]:.3f}" for c in COLUMNS) + " |" for name, m in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a synthetic federation (site-*/ and validation/)")
    parser.add_argument("--checkpoint", type=Path, action="append", default=[])
    parser.add_argument("--train", nargs="*", default=[], metavar="UPSAMPLE:LAMBDA")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    volumes = list(build_eval_dataset(discover_cases(args.data / "validation").cases))
    window = RunConfig().validation_window(mixed_precision=False)
    rows = []
    for path in args.checkpoint:
        rows.append((f"{path.parent.name}/{path.name}", measure(load_checkpoint(path).model, volumes, window)))
        print(table(rows), flush=True)
    training = [case for site in sorted(args.data.glob("site-*")) for case in discover_cases(site).cases]
    for variant in args.train:
        upsample, weight, *options = variant.split(":")
        hidden = [int(option[len("hidden"):]) for option in options if option.startswith("hidden")]
        unknown = {option for option in options if not option.startswith("hidden")} - {"zero-bias", "detached"}
        if unknown:
            parser.error(f"unknown variant option(s) {sorted(unknown)} in {variant!r}")
        attention.segmentation_gate = detached_gate if "detached" in options else segmentation_gate
        variant_config = RunConfig(model_upsample=upsample, attention_weight=float(weight), seed=args.seed,
                                   model_gate_hidden_channels=hidden[0] if hidden else 0)
        torch.manual_seed(args.seed)
        model = SegGuidedNet.from_config(variant_config.model)
        if "zero-bias" in options:
            for gate in model.gates:
                torch.nn.init.zeros_(gate.to_maps.bias)
        started = time.perf_counter()
        for part, steps in enumerate((args.steps // 2, args.steps - args.steps // 2)):
            train_local_round(model, training, variant_config, args.seed + part, torch.device("cpu"), False, steps=steps)
            done = args.steps // 2 if part == 0 else args.steps
            label = "".join(f", {option.replace('-', ' ')}" for option in options)
            rows.append((f"{upsample}, λ={weight}{label}, seed {args.seed}, {done} steps",
                         measure(model, volumes, window)))
            print(table(rows), f"\n({time.perf_counter() - started:.0f} s)", flush=True)
    args.out.write_text(table(rows) + "\n")


if __name__ == "__main__":
    main()
