"""A hospital keeps its federated-evaluation metrics unless its site config shares them (never under DP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.site_client import SiteClient
from client.site_config import resolve_node_config
from segguided_federation import metric_keys as keys
from segguided_federation.run_config import RunConfig


def _node_config(tmp_path: Path, extra: str = "") -> dict:
    path = tmp_path / "site.toml"
    # The data folder does not exist: a site that withholds never even loads its cases.
    path.write_text(f'site-id = "hospital-a"\ndata-path = "{tmp_path / "absent"}"\n{extra}')
    return resolve_node_config({"site-config": str(path)})


def test_a_hospital_withholds_its_evaluation_by_default(tmp_path):
    loss, cases, metrics = SiteClient(_node_config(tmp_path), RunConfig()).evaluate([], {})
    assert (loss, cases, metrics) == (0.0, 0, {keys.EVALUATION_WITHHELD: 1})


def test_differential_privacy_withholds_it_even_when_the_hospital_opted_in(tmp_path):
    config = RunConfig(differential_privacy=True)
    node_config = _node_config(tmp_path, "share-evaluation-metrics = true\n")
    assert SiteClient(node_config, config).evaluate([], {}) == (0.0, 0, {keys.EVALUATION_WITHHELD: 1})


def test_a_hospital_that_opted_in_evaluates_its_own_cases(tmp_path):
    client = SiteClient(_node_config(tmp_path, "share-evaluation-metrics = true\n"), RunConfig())
    with pytest.raises(FileNotFoundError, match="absent"):  # it went on to load its (here missing) data folder
        client.evaluate([], {})
