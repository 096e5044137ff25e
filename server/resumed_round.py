"""Completing the round a crash interrupted: its federated evaluation, before a resumed run trains on."""

from __future__ import annotations

from typing import cast

from flwr.app import ConfigRecord
from flwr.compat.server.typing import Workflow
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.default_workflows import default_init_params_workflow
from flwr.serverapp import Grid

from server.history import RoundRecord


def lacks_evaluation(record: RoundRecord, due: bool, fraction_evaluate: float) -> bool:
    """Whether the round a run resumes from still needs its central validation or federated evaluation.

    Central validation is missing if the round is ``due`` under the resumed run's settings
    (``RunConfig.validates_after``: say it became the last round) and has no central
    metrics. Federated evaluation follows every central validation, before the crash or
    now, and is missing until it ran to its end (``site_evaluation_finished``; its site
    metrics are empty when every site withholds them, which is not missing).

    Args:
        record: the resumed round's record (a round after round 0).
        due: whether the resumed run's settings validate this round.
        fraction_evaluate: the run's ``fraction-evaluate`` (0: no federated evaluation).
    """
    validated = bool(record.central) or due
    return (due and not record.central) or (validated and fraction_evaluate > 0 and not record.site_evaluation_finished)


class EvaluateInterruptedRound:
    """A fit workflow that first runs the federated evaluation the resumed checkpoint's round lacks.

    A ServerApp killed after round ``k``'s checkpoint but before its federated evaluation
    ended resumes from round ``k`` without it; so does a run killed after a round that
    skipped validation (``evaluate-every``) which the resumed run's settings validate (as
    its last round, say). ``CheckpointedStrategy`` validates such a round centrally when
    Flower evaluates the initial parameters. Before the resumed run's first training
    round, this sends round ``k``'s model (still the global model then) to the sites for
    evaluation, with Flower's own evaluate workflow at the run's round 0, which
    ``CheckpointedStrategy`` counts as round ``k``; every later call only trains.

    Args:
        fit_workflow: the run's fit workflow (``decodable_replies.fit_workflow``, or secure aggregation).
        evaluate_workflow: the run's evaluate workflow (``decodable_replies.evaluate_workflow``
            with the run's ``reply-timeout``).
        pending: whether the resumed round still needs its federated evaluation.
    """

    def __init__(self, fit_workflow: Workflow, evaluate_workflow: Workflow, pending: bool) -> None:
        self.fit_workflow = fit_workflow
        self.evaluate_workflow = evaluate_workflow
        self.pending = pending

    def __call__(self, grid: Grid, context: LegacyContext) -> None:
        if self.pending:
            self.pending = False
            configs = context.state.config_records[MAIN_CONFIGS_RECORD]
            current = cast(int, configs[WorkflowKey.CURRENT_ROUND])
            configs[WorkflowKey.CURRENT_ROUND] = 0
            try:
                self.evaluate_workflow(grid, context)
            finally:
                configs[WorkflowKey.CURRENT_ROUND] = current
        self.fit_workflow(grid, context)


def evaluate_interrupted_round(grid: Grid, context: LegacyContext, evaluate_workflow: Workflow) -> None:
    """Only the federated evaluation of the resumed checkpoint's round: a run killed during its last round's evaluation.

    With no round left to train, ``EvaluateInterruptedRound`` never runs; this uses the
    same pieces of Flower's ``DefaultWorkflow`` (the client manager's update thread, the
    initial parameters, the evaluate workflow at round 0, which ``CheckpointedStrategy``
    counts as the resumed round) without its training loop.
    """
    thread, stop, registered = start_update_client_manager_thread(grid, context.client_manager)
    registered.wait()
    try:
        default_init_params_workflow(grid, context)
        configs = ConfigRecord()
        configs[WorkflowKey.CURRENT_ROUND] = 0
        context.state.config_records[MAIN_CONFIGS_RECORD] = configs
        evaluate_workflow(grid, context)
    finally:
        stop.set()
        thread.join()
