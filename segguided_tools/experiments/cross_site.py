"""Cross-site evaluation: one model on every site's validation split, the worst site and the spread.

Each site's validation split is the one its client used during the run: the site folder
passes the same QA gate and ``split_cases`` with the run's ``validation-fraction`` and
``seed`` (``segguided_federation.site_data.load_site``), so no training case of any site is evaluated.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from segguided_federation import metric_keys as keys
from segguided_federation.run_config import RunConfig
from segguided_federation.site_data import Site, load_site
from segguided_model.data.pipeline import build_eval_dataset
from segguided_model.evaluation import evaluate_volumes
from segguided_model.metrics import DICE_MEAN_KEY, SUMMARY_KEYS
from segguided_model.training import resolve_device, resolve_mixed_precision


@dataclass(frozen=True)
class CrossSiteResult:
    """A model's metrics on every site.

    Attributes:
        sites: site id → mean Dice/HD95 per region over its validation cases, plus ``cases``.
        worst_site: the site with the lowest mean Dice.
        mean: the unweighted mean over sites of each metric.
        spread: best minus worst site's mean Dice.
        std: standard deviation of the sites' mean Dice (0 for one site).
    """

    sites: dict[str, dict[str, float]]
    worst_site: str
    mean: dict[str, float]
    spread: float
    std: float

    def to_json(self) -> dict[str, Any]:
        return {
            "sites": self.sites,
            "worst-site": self.worst_site,
            "worst-dice-mean": self.sites[self.worst_site][DICE_MEAN_KEY],
            "mean": self.mean,
            "spread": self.spread,
            "std": self.std,
        }

    def rows(self) -> list[dict[str, Any]]:
        """One CSV row per site."""
        return [{"site": site, **metrics} for site, metrics in sorted(self.sites.items())]


def load_sites(site_dirs: Sequence[Path], config: RunConfig) -> list[Site]:
    """Each site folder through the QA gate and split exactly as its client does it."""
    return [load_site({"data-path": str(folder)}, config) for folder in site_dirs]


def summarise_sites(sites: dict[str, dict[str, float]]) -> CrossSiteResult:
    """Worst site, mean and spread of per-site metrics.

    Raises:
        ValueError: no site has metrics.
    """
    if not sites:
        raise ValueError("no site has validation cases to evaluate on")
    dice = {site: metrics[DICE_MEAN_KEY] for site, metrics in sites.items()}
    worst = min(sorted(dice), key=dice.__getitem__)
    mean = {key: statistics.fmean(m[key] for m in sites.values()) for key in SUMMARY_KEYS}
    spread = max(dice.values()) - min(dice.values())
    std = statistics.pstdev(dice.values()) if len(dice) > 1 else 0.0
    return CrossSiteResult(dict(sites), worst, mean, spread, std)


def evaluate_across_sites(model: nn.Module, sites: Sequence[Site], config: RunConfig) -> CrossSiteResult:
    """Evaluate ``model`` on each site's validation split.

    Args:
        model: a ``SegGuidedNet`` (e.g. ``load_checkpoint(run / "final.pt").model``).
        sites: the run's sites, loaded with its configuration (``load_sites``).
        config: the run's configuration (patch size, device).

    Returns:
        Per-site metrics and their summary; sites without validation cases are left out.
    """
    device = resolve_device(config.device)
    mixed_precision = resolve_mixed_precision(config.mixed_precision, device)
    results = {}
    with torch.inference_mode():
        for site in sites:
            if not site.validation_cases:
                continue
            volumes = build_eval_dataset(site.validation_cases, site.cache_dir)
            _, means = evaluate_volumes(model, volumes, config.validation_window(mixed_precision), device)
            results[site.site_id] = {**{k: float(means[k]) for k in SUMMARY_KEYS}, keys.EVALUATION_CASES: len(site.validation_cases)}
    return summarise_sites(results)
