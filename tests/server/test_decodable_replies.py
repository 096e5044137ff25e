"""A plain reply Flower cannot decode fails only its sender, in training and in federated evaluation.

Four hospitals answer through the real client mods over ``InProcessGrid``; one rewrites its
reply (``incoming``) so that Flower's ``recorddict_to_fitres``/``recorddict_to_evaluateres``
raise on it. Flower's own default workflows then end (which ended the ServerApp); the
project's workflows record the node's failure and aggregate the other three exactly.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from flwr.app import Message
from flwr.app.error import Error
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from flwr.server.strategy import FedAvg
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.default_workflows import default_evaluate_workflow, default_fit_workflow
from in_process_federation import InProcessGrid, global_model, legacy_context, run_round

from client.client_app import MODS
from segguided_federation.run_config import RunConfig
from server import decodable_replies
from server.failure_reasons import describe_failure

SHAPES = [(4, 3), (5,)]
CASES = {1: 3, 2: 5, 3: 7, 4: 2}
MALICIOUS = 2


class Hospital(NumPyClient):
    """Adds a fixed update to the global model; evaluates with a fixed loss."""

    def __init__(self, node: int) -> None:
        self.node = node
        self.update = [np.full(shape, 0.01 * node, dtype=np.float32) for shape in SHAPES]

    def fit(self, parameters, config):
        return [p + u for p, u in zip(parameters, self.update)], CASES[self.node], {"site-id": f"hospital-{self.node}"}

    def evaluate(self, parameters, config):
        return 0.1 * self.node, CASES[self.node], {"site-id": f"hospital-{self.node}", "dice-mean": 0.1 * self.node}


class RecordingFedAvg(FedAvg):
    """Flower's FedAvg, keeping each round's failures as the operator would read them."""

    failures: list[str] = []

    def aggregate_fit(self, server_round, results, failures):
        self.failures = [describe_failure(failure) for failure in failures]
        return super().aggregate_fit(server_round, results, failures)

    def aggregate_evaluate(self, server_round, results, failures):
        self.failures = [describe_failure(failure) for failure in failures]
        return super().aggregate_evaluate(server_round, results, failures)


def _list_metric(kind: str):
    def change(content):
        content.config_records[f"{kind}.metrics"]["site-id"] = ["hospital-1", "hospital-3"]

    return change


def _unknown_status_code(kind: str):
    def change(content):
        content.config_records[f"{kind}.status"]["code"] = 99

    return change


def _missing_record(kind: str):
    def change(content):
        if kind == "fitres":
            del content.array_records["fitres.parameters"]
        else:
            del content.metric_records["evaluateres.loss"]

    return change


CORRUPTIONS = {"list as a metric": _list_metric, "unknown status code": _unknown_status_code,
               "record missing": _missing_record}
INITIAL = [np.zeros(shape, np.float32) for shape in SHAPES]


def _federation(change) -> tuple[InProcessGrid, object, RecordingFedAvg]:
    def incoming(stage, message):
        if message.metadata.src_node_id == MALICIOUS and not message.has_error():
            change(message.content)
        return message

    def app(node: int) -> ClientApp:
        return ClientApp(client_fn=lambda context: Hospital(node).to_client(), mods=list(MODS))

    config = {**RunConfig().to_flower(), "secure-aggregation": False}
    grid = InProcessGrid({node: app(node) for node in CASES}, config, incoming=incoming)
    strategy = RecordingFedAvg(fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=2, min_evaluate_clients=2,
                               min_available_clients=4, accept_failures=True)
    return grid, legacy_context(grid, strategy, INITIAL), strategy


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_training_reply_flower_cannot_decode_fails_only_its_sender(corruption):
    grid, context, _ = _federation(CORRUPTIONS[corruption]("fitres"))
    with pytest.raises((TypeError, ValueError, KeyError)):  # why the project's workflow exists: Flower's own ends here
        run_round(default_fit_workflow, grid, context, 1)

    grid, context, strategy = _federation(CORRUPTIONS[corruption]("fitres"))
    aggregated = run_round(decodable_replies.fit_workflow, grid, context, 1)

    honest = [node for node in CASES if node != MALICIOUS]
    total = sum(CASES[node] for node in honest)
    for index, array in enumerate(aggregated):
        expected = sum(CASES[node] * Hospital(node).update[index] for node in honest) / total
        np.testing.assert_allclose(array, expected, rtol=1e-6)
    assert len(strategy.failures) == 1
    assert strategy.failures[0].startswith(f"node {MALICIOUS}: reply rejected: it is no Flower training result")


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_an_evaluation_reply_flower_cannot_decode_fails_only_its_sender(corruption):
    grid, context, _ = _federation(CORRUPTIONS[corruption]("evaluateres"))
    context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND] = 1
    with pytest.raises((TypeError, ValueError, KeyError)):
        default_evaluate_workflow(grid, context)

    grid, context, strategy = _federation(CORRUPTIONS[corruption]("evaluateres"))
    context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND] = 1
    decodable_replies.evaluate_workflow(grid, context)

    honest = [node for node in CASES if node != MALICIOUS]
    expected = sum(CASES[node] * 0.1 * node for node in honest) / sum(CASES[node] for node in honest)
    assert context.history.losses_distributed == [(1, pytest.approx(expected))]
    assert len(strategy.failures) == 1
    assert strategy.failures[0].startswith(f"node {MALICIOUS}: reply rejected: it is no Flower evaluation result")
    np.testing.assert_array_equal(global_model(context)[0], INITIAL[0])


def test_an_error_reply_is_attributed_to_its_sender_whatever_its_text_says():
    """A hospital's exception text naming another node cannot move the failure onto that node."""
    forged = "<class 'RuntimeError'>:<'x\nSiteError: node 1: reply rejected: weight array 0 holds a NaN'>"

    grid, context, strategy = _federation(lambda content: None)
    grid.incoming = lambda stage, message: (
        Message(metadata=message.metadata, error=Error(code=0, reason=forged))
        if message.metadata.src_node_id == MALICIOUS else message
    )
    run_round(decodable_replies.fit_workflow, grid, context, 1)
    assert len(strategy.failures) == 1 and strategy.failures[0].startswith(f"node {MALICIOUS}: ")


def test_a_site_that_never_answers_fails_the_round_for_itself_only():
    """Flower's workflows wait for a reply until the message's TTL (12 h); with reply-timeout the site fails."""
    grid, context, strategy = _federation(lambda content: None)
    grid.silence = lambda stage, node, server_round: node == MALICIOUS
    aggregated = run_round(partial(decodable_replies.fit_workflow, timeout=5.0), grid, context, 1)

    honest = [node for node in CASES if node != MALICIOUS]
    total = sum(CASES[node] for node in honest)
    expected = sum(CASES[node] * Hospital(node).update[0] for node in honest) / total
    np.testing.assert_allclose(aggregated[0], expected, rtol=1e-6)
    assert strategy.failures == [f"node {MALICIOUS}: no reply within reply-timeout = 5 s"]


def test_a_second_reply_or_one_from_a_node_not_asked_is_left_out():
    """One node must not weigh twice in FedAvg, nor an unasked node at all (the secure workflow keeps the same rule)."""
    grid, context, strategy = _federation(lambda content: None)
    deliver = grid._deliver

    def twice(message):
        reply = deliver(message)
        if message.metadata.dst_node_id == MALICIOUS and reply is not None:
            grid.extra.append(reply)
        return reply

    grid.extra = []
    grid._deliver = twice
    pull = grid.pull_messages
    grid.pull_messages = lambda ids: [*pull(ids), *grid.extra]
    aggregated = run_round(partial(decodable_replies.fit_workflow, timeout=5.0), grid, context, 1)

    total = sum(CASES.values())
    expected = sum(CASES[node] * Hospital(node).update[0] for node in CASES) / total
    np.testing.assert_allclose(aggregated[0], expected, rtol=1e-6)
