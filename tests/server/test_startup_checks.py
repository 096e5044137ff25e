"""Configuration a run can check at start is checked at start, naming the key."""

from __future__ import annotations

import logging
import threading

import pytest

from segguided_federation.run_config import RunConfig
from server.startup_checks import (
    StartupCheckError,
    check_data_folders,
    check_federation_size,
)
from server.supernode_wait import (
    PatientClientManager,
    SuperNodesUnavailable,
    wait_for_supernodes,
)


def test_a_missing_data_dir_is_named(tmp_path):
    config = RunConfig(data_dir=str(tmp_path / "nowhere"), server_validation_dir=str(tmp_path))
    with pytest.raises(StartupCheckError, match=rf"data-dir {tmp_path / 'nowhere'} does not exist"):
        check_data_folders(config)


def test_a_data_dir_without_site_folders_is_named(tmp_path):
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / "README.txt").write_text("sites go here")
    config = RunConfig(data_dir=str(tmp_path), server_validation_dir=str(tmp_path))
    with pytest.raises(StartupCheckError, match="holds no site folder"):
        check_data_folders(config)


def test_a_missing_server_validation_dir_is_named(tmp_path):
    with pytest.raises(StartupCheckError, match="server-validation-dir .* does not exist"):
        check_data_folders(RunConfig(server_validation_dir=str(tmp_path / "val")))


def test_more_supernodes_than_site_folders_is_refused(tmp_path):
    for name in ("site-1", "site-2"):
        (tmp_path / name).mkdir()
    config = RunConfig(data_dir=str(tmp_path), server_validation_dir=str(tmp_path))
    check_federation_size(config, 2)
    with pytest.raises(StartupCheckError, match="holds 2 site folder.* but 3 SuperNodes"):
        check_federation_size(config, 3)


def test_a_synthetic_federation_must_match_the_supernodes():
    check_federation_size(RunConfig(synthetic_sites=3), 3)
    with pytest.raises(StartupCheckError, match='synthetic-sites=3 but 4 SuperNodes.*synthetic-sites=4'):
        check_federation_size(RunConfig(synthetic_sites=3), 4)


def test_waiting_for_too_few_supernodes_ends_naming_both_keys(caplog):
    caplog.set_level(logging.INFO, logger="server.supernode_wait")
    with pytest.raises(SuperNodesUnavailable, match=r"only 2 SuperNode\(s\) connected .* min-available-clients=3.*"
                                                    r"client-wait-timeout"):
        wait_for_supernodes(lambda: 2, needed=3, timeout=1.0, purpose="run start")
    assert "waiting for 3 SuperNode(s) (min-available-clients), 2 connected" in caplog.text


def test_a_supernode_that_connects_while_waiting_ends_the_wait():
    connected = [1]
    threading.Timer(0.3, lambda: connected.append(1)).start()
    assert wait_for_supernodes(lambda: len(connected), needed=2, timeout=30.0, purpose="run start") == 2


def test_the_client_manager_gives_up_after_client_wait_timeout():
    manager = PatientClientManager(timeout=0.5)  # Flower's own manager would wait a day
    with pytest.raises(SuperNodesUnavailable, match="sampling clients: only 0 SuperNode"):
        manager.sample(num_clients=2, min_num_clients=2)
