"""The hospital's site config file: validated once, errors name the file and key, paths resolved."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.site_config import SiteConfig, SiteConfigError, resolve_node_config

DEPLOY_EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "site-config.example.toml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def test_relative_paths_are_resolved_against_the_file(tmp_path):
    path = _write(tmp_path, 'site-id = "hospital-a"\ndata-path = "data"\nmetrics-file = "state/m.json"\n')
    config = SiteConfig.load(path)
    assert config.data_path == tmp_path / "data"
    assert config.metrics_file == tmp_path / "state" / "m.json"
    assert config.metrics_port == 0 and config.cache_dir is None


def test_node_config_expands_the_file_and_direct_keys_win(tmp_path):
    path = _write(tmp_path, 'site-id = "hospital-a"\ndata-path = "/data/brats"\ncache-dir = "/cache"\n')
    resolved = resolve_node_config({"site-config": str(path), "site-id": "hospital-b"})
    assert resolved == {"site-id": "hospital-b", "data-path": "/data/brats", "cache-dir": "/cache"}


def test_node_config_without_a_file_is_unchanged():
    assert resolve_node_config({"partition-id": 0, "num-partitions": 3}) == {"partition-id": 0, "num-partitions": 3}


@pytest.mark.parametrize(
    "text, key",
    [
        ('data-path = "/d"\nmetrics-port = 70000\n', "metrics-port"),
        ('data-path = "/d"\nsite-id = "../etc"\n', "site-id"),
        ('data-path = "/d"\ngpu = 1\n', "gpu"),
        ('site-id = "a"\n', "data-path"),
        ('data-path = "/d"\nlabel-convention = "brats2025"\n', "label-convention"),
    ],
)
def test_bad_key_is_named_with_the_file(tmp_path, text, key):
    path = _write(tmp_path, text)
    with pytest.raises(SiteConfigError, match=rf"site config {path}: .*{key}"):
        SiteConfig.load(path)


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(SiteConfigError, match="cannot read"):
        SiteConfig.load(tmp_path / "absent.toml")
    with pytest.raises(SiteConfigError, match="not valid TOML"):
        SiteConfig.load(_write(tmp_path, "data-path = \n"))


def test_the_deploy_example_is_valid():
    config = SiteConfig.load(DEPLOY_EXAMPLE)
    assert config.metrics_port > 0 and config.metrics_file is not None


def test_label_convention_reaches_the_node_config(tmp_path):
    path = _write(tmp_path, 'data-path = "/data/brats"\nlabel-convention = "brats2024"\n')
    assert resolve_node_config({"site-config": str(path)}) == {"data-path": "/data/brats", "label-convention": "brats2024"}
    assert "label-convention" not in SiteConfig.load(_write(tmp_path, 'data-path = "/d"\n')).node_config()


def test_secure_aggregation_policy_keys_reach_the_node_config_with_paths_resolved(tmp_path):
    path = _write(
        tmp_path,
        'data-path = "/d"\nsecure-aggregation-identity-key = "keys/supernode.key"\n'
        'secure-aggregation-roster = "roster.pub"\nsecure-aggregation-min-clients = 5\n',
    )
    resolved = resolve_node_config({"site-config": str(path)})
    assert resolved["secure-aggregation-identity-key"] == str(tmp_path / "keys" / "supernode.key")
    assert resolved["secure-aggregation-roster"] == str(tmp_path / "roster.pub")
    assert resolved["secure-aggregation-min-clients"] == 5
    assert "secure-aggregation-lowest-max-cases" not in resolved  # only what the file sets


@pytest.mark.parametrize(
    "text, key",
    [
        ('data-path = "/d"\nsecure-aggregation-min-clients = 2\n', "secure-aggregation-min-clients"),
        ('data-path = "/d"\nsecure-aggregation-lowest-clipping-range = 0\n', "secure-aggregation-lowest-clipping-range"),
        ('data-path = "/d"\nsecure-aggregation-roster = "r.pub"\n', "secure-aggregation-identity-key"),
    ],
)
def test_bad_secure_aggregation_settings_are_named(tmp_path, text, key):
    with pytest.raises(SiteConfigError, match=key):
        SiteConfig.load(_write(tmp_path, text))
