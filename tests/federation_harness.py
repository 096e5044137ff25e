"""Tiny run configurations for tests that run real federations on a private local SuperLink."""

from __future__ import annotations

from pathlib import Path

from segguided_tools.local_simulation import (
    PROJECT_ROOT,
    LocalFederation,
    free_port,
    open_local_federation,
    run_config_argument,
)

__all__ = ["PROJECT_ROOT", "LocalFederation", "free_port", "open_local_federation", "tiny_settings", "tiny_run_config"]


def tiny_settings(output_dir: Path, **overrides: object) -> dict[str, object]:
    """Run-config overrides small enough for a 2-core CPU: 32³ volumes, width 4, a few steps."""
    settings: dict[str, object] = {
        "num-server-rounds": 2,
        "local-steps": 3,
        "batch-size": 1,
        "patch-size": "32",
        "model-base-width": 4,
        "model-levels": 3,
        "synthetic-sites": 3,
        "synthetic-cases-per-site": 4,
        "synthetic-validation-cases": 2,
        "synthetic-size": 32,
        "validation-fraction": 0.25,
        "output-dir": str(output_dir),
    }
    settings.update(overrides)
    return settings


def tiny_run_config(output_dir: Path, **overrides: object) -> str:
    """``tiny_settings`` as a ``--run-config`` argument."""
    return run_config_argument(tiny_settings(output_dir, **overrides))

