"""A ServerApp that kills itself (SIGKILL) at a chosen moment of a chosen round, for kill-and-resume tests.

``tests/server/test_faults.py`` copies the project, points its ``serverapp`` component at
``tests.fault_injection_app:app`` and adds the run-config key ``fault-point``:

* ``training@N``: round N's clients have trained, nothing of the round is kept yet;
* ``checkpoint-write@N``: half of ``round-000N.pt``'s temporary file is on disk;
* ``after-checkpoint@N``: round N's checkpoint and best.pt are written, its federated
  evaluation is not;
* ``evaluation@N``: round N's federated-evaluation replies arrived, none is recorded.

An empty ``fault-point`` runs the app unchanged. SIGKILL, not an exception: no ``finally``
block, lock release or flush runs, as when an operator or the OOM killer ends the process.
Just before it dies the app touches ``<output-dir>/<run-name>.killed``, so that a test can
stop the dead run (``flwr stop``) instead of waiting for the SuperLink's heartbeat timeout.
``client_app`` is the project's ClientApp with the ``fault-point`` key hidden from it.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp import Grid, ServerApp

import segguided_model.checkpoint as checkpoint_module
from client.client_app import MODS, client_fn
from segguided_federation.logging_setup import route_to_flower_console
from server import server_app
from server.checkpointed_strategy import CheckpointedStrategy
from server.run_folder import RunFolder

FAULT_POINT_KEY = "fault-point"

app = ServerApp()
_marker: list[Path] = []


def _die() -> None:
    for marker in _marker:
        marker.touch()
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(moment: str, number: int) -> None:
    if moment == "training":
        aggregate_fit = CheckpointedStrategy.aggregate_fit

        def dying_aggregate_fit(self, server_round, results, failures):
            if self._number(server_round) == number:
                _die()
            return aggregate_fit(self, server_round, results, failures)

        CheckpointedStrategy.aggregate_fit = dying_aggregate_fit
    elif moment == "checkpoint-write":
        write = checkpoint_module.write_bytes_atomically

        def dying_write(path, data):
            if Path(path).name == f"round-{number:04d}.pt":
                descriptor, _ = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=Path(path).parent)
                os.write(descriptor, bytes(data[: len(data) // 2]))
                os.fsync(descriptor)
                _die()
            return write(path, data)

        checkpoint_module.write_bytes_atomically = dying_write
    elif moment == "after-checkpoint":
        save_round = RunFolder.save_round

        def dying_save_round(self, model, round_number, extra, is_best):
            save_round(self, model, round_number, extra, is_best)
            if round_number == number:
                _die()

        RunFolder.save_round = dying_save_round
    elif moment == "evaluation":
        aggregate_evaluate = CheckpointedStrategy.aggregate_evaluate

        def dying_aggregate_evaluate(self, server_round, results, failures):
            if self._number(server_round) == number:
                _die()
            return aggregate_evaluate(self, server_round, results, failures)

        CheckpointedStrategy.aggregate_evaluate = dying_aggregate_evaluate
    else:
        raise ValueError(f"unknown fault point {moment!r}")


@app.main()
def main(grid: Grid, context: Context) -> None:
    route_to_flower_console()
    fault = str(context.run_config.get(FAULT_POINT_KEY, ""))
    _hide_fault_point(context)
    if fault:
        moment, _, number = fault.partition("@")
        _marker.append(Path(str(context.run_config["output-dir"])) / f"{context.run_config['run-name']}.killed")
        _arm(moment, int(number))
    server_app.run_server(grid, context)


def _hide_fault_point(context: Context) -> None:
    context.run_config = {key: value for key, value in context.run_config.items() if key != FAULT_POINT_KEY}


def _hide_fault_point_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    # A SuperNode refuses a Context whose run config changed, so the key is put back afterwards.
    hidden = context.run_config.pop(FAULT_POINT_KEY, None)
    try:
        return call_next(message, context)
    finally:
        if hidden is not None:
            context.run_config[FAULT_POINT_KEY] = hidden


client_app = ClientApp(client_fn=client_fn, mods=[_hide_fault_point_mod, *MODS])
