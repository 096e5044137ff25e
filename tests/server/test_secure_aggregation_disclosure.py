"""A server that probes with its own range settings learns no hospital's value from the failures.

``secure-aggregation-max-cases`` and ``secure-aggregation-clipping-range`` are the
server's settings. Set to 1 and 1e-6 they would make every hospital fail; what the server
keeps of those failures (the round report, ``metrics.json``, its own log) must name the
rule and the key but never a hospital's case count or update size. The hospitals' own log
keeps the details.
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
from flwr.server.strategy import FedAvg
from known_update_federation import known_update_federation
from torch import nn

from server.checkpointed_strategy import CheckpointedStrategy
from server.history import RunHistory
from server.run_folder import RunFolder

CASES = {1: 137, 2: 251, 3: 389, 4: 433}
PROBES = {
    "max-cases=1": ({"secure-aggregation-max-cases": 1}, "secure-aggregation-max-cases"),
    "clipping-range=1e-6": ({"secure-aggregation-clipping-range": 1e-6}, "secure-aggregation-clipping-range"),
}
LOWERED_FLOORS = {"secure-aggregation-lowest-max-cases": 1, "secure-aggregation-lowest-clipping-range": 1e-9}


def _hospital_values(federation) -> list[str]:
    """Every way a hospital's case count or largest |Δ| (of any weight array) could be written."""
    values = []
    for node, cases in federation.cases.items():
        values.append(rf"(?<![\d.]){cases}(?![\d])")
        for largest in (float(np.max(np.abs(u))) for u in federation.updates[node]):
            written = [format(largest, spec) for spec in (".3g", ".4g", ".6g")] + [repr(largest)]
            values += [rf"(?<![\d.]){re.escape(text)}(?!\d)" for text in written]  # not inside a longer number
    return values


@pytest.mark.parametrize("floors", ["hospital defaults", "floors lowered by the hospital"])
@pytest.mark.parametrize("probe", PROBES)
def test_a_probe_leaves_no_hospital_value_with_the_server(tmp_path, caplog, probe, floors):
    run_config, key = PROBES[probe]
    folder = RunFolder(tmp_path, keep_round_checkpoints=2)
    strategy = CheckpointedStrategy(
        FedAvg(fraction_fit=1.0, min_fit_clients=2, min_available_clients=2, accept_failures=True),
        model=nn.Linear(1, 1), validator=lambda model: ([], {}), folder=folder, history=RunHistory(tmp_path),
        completed_rounds=0, num_rounds=1, min_fit_clients=2, fit_config={},
    )
    node_configs = {n: LOWERED_FLOORS for n in CASES} if floors != "hospital defaults" else {}
    federation = known_update_federation(
        run_config, CASES, strategy=strategy, on_round=strategy.record_secure_round, node_configs=node_configs
    )

    with caplog.at_level(logging.DEBUG):
        federation.run()
    strategy.history.write()

    record = json.loads((tmp_path / "metrics.json").read_text())["rounds"][0]
    assert record["aggregated"] is False
    assert any(key in failure for failure in record["failures"]), record["failures"]
    server_log = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("client"))
    kept = json.dumps(record) + json.dumps(federation.reports[0].to_json()) + server_log
    leaked = [value for value in _hospital_values(federation) if re.search(value, kept)]
    assert leaked == [], leaked
    if floors != "hospital defaults":  # the hospital failed on its values: its own log has them
        hospital_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("client"))
        assert any(re.search(value, hospital_log) for value in _hospital_values(federation))
