"""Prometheus metrics of the ServerApp: one gauge set per finished round, served over HTTP.

``ServerMetrics`` is a ``CheckpointedStrategy`` listener: after every round it publishes
the round's record (rounds completed, duration, clients selected/succeeded/failed,
central Dice and HD95 per region, aggregation time, bytes received). Each process owns
its own ``CollectorRegistry``, so nothing leaks between exporters or into the default
registry that other libraries use.

The endpoint itself is ``segguided_federation.metrics_endpoint.serve_metrics``, shared with
the hospital's exporter.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from segguided_model.metrics import DICE_KEYS, DICE_MEAN_KEY, HD95_KEYS, HD95_MEAN_KEY
from server.history import RoundRecord

REGION_LABELS: dict[str, tuple[str, str]] = {
    key.removeprefix("dice-"): (key, hd95) for key, hd95 in zip((*DICE_KEYS, DICE_MEAN_KEY), (*HD95_KEYS, HD95_MEAN_KEY))
}
"""Prometheus ``region`` label → its Dice and HD95 keys (``et``, ``tc``, ``wt``, ``mean``)."""


class ServerMetrics:
    """The ServerApp's Prometheus metrics, updated from each finished round's record.

    Args:
        run_id: the Flower run id, exposed in ``segguided_server_run_info``.
        run_name: the run folder's name.
    """

    def __init__(self, run_id: int | str, run_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        info = Info("segguided_server_run", "The run these metrics belong to", registry=self.registry)
        info.info({"run_id": str(run_id), "run_name": run_name})

        def gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"segguided_server_{name}", documentation, labels, registry=self.registry)

        self.rounds_completed = gauge("rounds_completed", "Rounds finished in this run (resumed rounds included)")
        self.round_duration = gauge("round_duration_seconds", "Wall time of the last round")
        self.clients_selected = gauge("clients_selected", "Clients asked to train in the last round")
        self.clients_succeeded = gauge("clients_succeeded", "Clients whose training result arrived in the last round")
        self.clients_failed = gauge("clients_failed", "Clients that failed or dropped out in the last round")
        self.aggregated = gauge("round_aggregated", "1 if the last round updated the global model, else 0")
        self.aggregation_seconds = gauge("aggregation_seconds", "Time to aggregate the last round's updates")
        self.bytes_received = gauge("bytes_received", "Model-update bytes received in the last round")
        self.central_dice = gauge("central_dice", "Central validation Dice of the global model", ("region",))
        self.central_hd95 = gauge("central_hd95_mm", "Central validation HD95 of the global model", ("region",))
        self.bytes_received_total = Counter(
            "segguided_server_received_bytes", "Model-update bytes received by this process", registry=self.registry
        )
        self._counted_rounds: set[int] = set()

    def record_round(self, record: RoundRecord, received_here: bool = True) -> None:
        """Publish one finished round (round 0, the initial model, only sets the central metrics).

        A round's bytes count towards ``segguided_server_received_bytes`` once, however
        often the round is published (a resumed round is published at start and again when
        its pending evaluation ends), and never if this process did not receive them
        (``received_here=False``: the round a run resumes from).
        """
        for region, (dice, hd95) in REGION_LABELS.items():
            if dice in record.central:
                self.central_dice.labels(region=region).set(record.central[dice])
            if hd95 in record.central:
                self.central_hd95.labels(region=region).set(record.central[hd95])
        if record.round == 0:
            return
        self.rounds_completed.set(record.round)
        self.round_duration.set(record.timing.get("round-seconds", 0.0))
        self.clients_selected.set(record.clients_selected)
        self.clients_succeeded.set(record.clients_succeeded)
        self.clients_failed.set(record.clients_failed)
        self.aggregated.set(1 if record.aggregated else 0)
        self.aggregation_seconds.set(record.timing.get("aggregation-seconds", 0.0))
        self.bytes_received.set(record.bytes_received)
        if record.round not in self._counted_rounds:
            self._counted_rounds.add(record.round)
            if received_here:
                self.bytes_received_total.inc(record.bytes_received)
