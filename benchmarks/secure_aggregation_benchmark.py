"""Secure vs plain aggregation: round time and bytes per client, ours and stock Flower SecAgg+.

Three parts, on the default model (``RunConfig()``):

* ``protocol``: one fit round in one process (``tests/in_process_federation.py``: every
  message serialised to Flower's protobuf and back), clients that return the global model
  plus a small random update, for plain FedAvg, stock Flower SecAgg+ (``SecAggPlusWorkflow``
  + ``secaggplus_mod``), ours without a roster (as in simulation) and ours with identity keys
  and a roster (as in deployment), at each client count. Clients run one after another, so
  the round time is the total work of server and clients; ``added`` is the time secure
  aggregation adds over plain. Bytes are protobuf message sizes per client; client time is
  also split by stage.
* ``checks``: what the hospital-side protections cost one client per round at each client
  count, timed on their own: signing its keys and its survivor confirmation, verifying its
  neighbours' key signatures and the threshold of confirmations, the share digests, loading
  its identity key and roster.
* ``federation``: real ``flwr run`` simulations (local SuperLink, Ray, 1 CPU per client)
  with the default local training, secure vs plain, one round each; the fit phase is
  from the round's first message to aggregation. Simulation passes SuperNodes no site
  config, so these secure rounds run without a roster: every signature and check runs, only
  the roster lookup (a set membership) does not.

Usage: ``python benchmarks/secure_aggregation_benchmark.py [--clients 3 10 20]
[--federation-clients 10] [--skip-federation] [--out PATH]``; writes ``PATH.{json,md}``
(default ``benchmarks/results/secure_aggregation``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from flwr.app import Context  # noqa: E402
from flwr.client import NumPyClient  # noqa: E402
from flwr.client.mod import secaggplus_mod  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.server.workflow import SecAggPlusWorkflow  # noqa: E402
from flwr.server.workflow.default_workflows import default_fit_workflow  # noqa: E402
from in_process_federation import InProcessGrid, legacy_context, run_round  # noqa: E402
from known_update_federation import registered_identities  # noqa: E402

from client.client_app import MODS  # noqa: E402
from client.secure_policy import SecureAggregationPolicy  # noqa: E402
from segguided_federation.run_config import RunConfig  # noqa: E402
from segguided_federation.secure_identity import (  # noqa: E402
    key_binding_message,
    survivors_message,
    verify_signature,
)
from segguided_federation.secure_protocol import (  # noqa: E402
    SessionId,
    majority_threshold,
    share_digest,
)
from segguided_model.network import SegGuidedNet  # noqa: E402
from segguided_model.state_arrays import model_to_arrays  # noqa: E402
from server.secure_aggregation import SecureAggregationWorkflow  # noqa: E402
from server.secure_round import SecureAggregationSettings  # noqa: E402


class SmallStepClient(NumPyClient):
    """Local training stand-in: the global model plus a fixed small update (AdamW-sized)."""

    def __init__(self, seed: int, cases: int) -> None:
        self.seed, self.cases = seed, cases

    def fit(self, parameters, config):
        rng = np.random.default_rng(self.seed)
        local = [(p + rng.normal(0, 1e-3, p.shape)).astype(p.dtype) for p in parameters]
        return local, self.cases, {"loss": 1.0, "segmentation-loss": 0.9, "attention-loss": 0.1}


def _apps(clients: int, mods: list) -> dict:
    def app(node: int) -> ClientApp:
        def client_fn(context: Context):
            return SmallStepClient(node, 10 + node).to_client()

        return ClientApp(client_fn=client_fn, mods=mods)

    return {node: app(node) for node in range(1, clients + 1)}


MODES = ("plain", "stock-secagg+", "ours", "ours+roster")


def protocol_round(mode: str, clients: int, scratch: Path) -> dict:
    """One in-process fit round; time, bytes per client, client time per stage and the global model's dtype."""
    initial = model_to_arrays(SegGuidedNet.from_config(RunConfig().model))
    run_config = RunConfig().to_flower()
    mods = {"plain": [], "stock-secagg+": [secaggplus_mod]}.get(mode, list(MODS))
    nodes = range(1, clients + 1)
    node_configs = registered_identities(scratch / f"keys-{clients}", nodes) if mode == "ours+roster" else {}
    grid = InProcessGrid(_apps(clients, mods), run_config, node_configs=node_configs)
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=2, min_available_clients=2, accept_failures=True)
    context = legacy_context(grid, strategy, initial)
    if mode == "plain":
        workflow = default_fit_workflow
    elif mode == "stock-secagg+":
        workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=0.6, timeout=1800.0)
    else:
        workflow = SecureAggregationWorkflow(SecureAggregationSettings.from_run_config(RunConfig()))
    started = time.perf_counter()
    result = run_round(workflow, grid, context, 1)
    seconds = time.perf_counter() - started
    client_seconds = sum(grid.client_seconds.values())
    return {
        "mode": mode,
        "clients": clients,
        "parameters": int(sum(a.size for a in initial)),
        "round-seconds": seconds,
        "client-seconds-total": client_seconds,
        "client-seconds-each": client_seconds / clients,
        "server-seconds": seconds - client_seconds,
        "bytes-sent-per-client": float(np.mean(list(grid.bytes_sent.values()))),
        "bytes-received-per-client": float(np.mean(list(grid.bytes_received.values()))),
        "client-seconds-each-by-stage": {stage: t / clients for stage, t in grid.stage_seconds.items()},
        "global-dtype": str(result[0].dtype),
    }


def _seconds_each(function, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def check_costs(clients: int, scratch: Path, repeats: int = 20) -> dict:
    """One client's cost per round of the signatures, digests and files the protections add (full graph).

    Per round a client signs twice (its keys, the survivor set), verifies ``clients - 1``
    neighbours' key signatures and at least ``threshold`` confirmations, computes ``2·clients``
    share digests and one seed digest, and loads its identity key and roster (setup,
    share-keys, consistency-check).
    """
    config = registered_identities(scratch / f"costs-{clients}", range(1, clients + 1))[1]
    policy = SecureAggregationPolicy.from_node_config(config)
    identity = policy.identity()
    session = SessionId(1, 1)
    threshold = max(round(0.6 * clients), majority_threshold(clients))
    keys_message = key_binding_message(session, 1, b"k" * 215, b"k" * 215)
    survivors = survivors_message(session, range(1, clients + 1))
    keys_signature, survivors_signature = identity.sign(keys_message), identity.sign(survivors)
    share = os.urandom(4 + 16 * 16)
    costs = {
        "sign": _seconds_each(lambda: identity.sign(keys_message), repeats)
        + _seconds_each(lambda: identity.sign(survivors), repeats),
        "verify": (clients - 1)
        * _seconds_each(lambda: verify_signature(identity.public_bytes, keys_message, keys_signature), repeats)
        + threshold
        * _seconds_each(lambda: verify_signature(identity.public_bytes, survivors, survivors_signature), repeats),
        "digests": (2 * clients + 1) * _seconds_each(lambda: share_digest(session, "seed", 1, 2, share), repeats),
        "identity-and-roster-files": 2 * _seconds_each(policy.identity, repeats)
        + 2 * _seconds_each(policy.roster, repeats),
    }
    costs["total"] = sum(costs.values())
    return {"clients": clients, "threshold": threshold, **{f"{k}-seconds": v for k, v in costs.items()}}


def federation_round(clients: int, secure: bool, root: Path) -> dict:
    """One real ``flwr run`` round with the default model and local training."""
    from segguided_tools.local_simulation import (  # noqa: PLC0415
        open_local_federation,
        run_config_argument,
    )

    federation = open_local_federation(root)
    try:
        name = f"{'secure' if secure else 'plain'}-{clients}"
        settings = {
            "num-server-rounds": 1, "fraction-evaluate": 0.0, "synthetic-sites": clients,
            "secure-aggregation": secure, "run-name": name, "output-dir": str(root / "runs"),
            "min-fit-clients": 2, "min-available-clients": 2,
        }
        run_config = run_config_argument(settings)
        started = time.perf_counter()
        federation.run(run_config, supernodes=clients, timeout=1800)
        wall = time.perf_counter() - started
    finally:
        federation.stop()
    record = json.loads((root / "runs" / name / "metrics.json").read_text())["rounds"][1]
    return {
        "mode": "ours" if secure else "plain",
        "clients": clients,
        "run-wall-seconds": wall,
        "fit-phase-seconds": record["timing"].get("fit-phase-seconds"),
        "round-seconds": record["timing"].get("round-seconds"),
        "client-training-seconds-max": record["timing"].get("client-training-seconds-max"),
        "secure-stage-seconds": record.get("secure-aggregation", {}).get("timing", {}),
        "central-dice-mean": record["central"].get("dice-mean"),
    }


def _markdown(results: dict) -> str:
    lines = [
        "# Secure aggregation benchmark",
        "",
        f"Machine: {results['machine']}. Model: default SegGuidedNet "
        f"({results['protocol'][0]['parameters']:,} parameters). Produced by "
        f"`python benchmarks/secure_aggregation_benchmark.py {results['arguments']}`.",
        "",
        "## Protocol cost (one process, one fit round, trivial local training)",
        "",
        "Clients run one after another: round time = server + all clients' work. "
        "`added` = round time minus plain's at the same client count. Download = what the "
        "server sends a client in the round (all stages), upload = what it sends back; both "
        "protobuf sizes. Stock SecAgg+ returns a float64 global model, so from its second "
        "round on its download doubles too. `ours` runs without a roster (as in simulation), "
        "`ours+roster` with identity keys and a roster at every client (as in deployment).",
        "",
        "| clients | mode | round s | added s | server s | client s (each) | download B/client | upload B/client | global dtype after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    plain = {r["clients"]: r["round-seconds"] for r in results["protocol"] if r["mode"] == "plain"}
    for r in results["protocol"]:
        lines.append(
            f"| {r['clients']} | {r['mode']} | {r['round-seconds']:.2f} | {r['round-seconds'] - plain[r['clients']]:.2f} "
            f"| {r['server-seconds']:.2f} | {r['client-seconds-each']:.3f} | {r['bytes-sent-per-client']:,.0f} "
            f"| {r['bytes-received-per-client']:,.0f} | {r['global-dtype']} |"
        )
    lines += ["", "Client seconds per client, by stage (`plain`: the training message):", ""]
    stages = sorted({stage for r in results["protocol"] for stage in r["client-seconds-each-by-stage"]})
    lines += ["| clients | mode | " + " | ".join(stages) + " |", "| --- | --- |" + " --- |" * len(stages)]
    for r in results["protocol"]:
        by_stage = r["client-seconds-each-by-stage"]
        cells = " | ".join(f"{by_stage[stage]:.4f}" if stage in by_stage else "-" for stage in stages)
        lines.append(f"| {r['clients']} | {r['mode']} | {cells} |")
    lines += [
        "",
        "## Client-side cost of signing and checks, per client and round",
        "",
        "Timed on their own: 2 ECDSA P-384 signatures (its keys, the survivor set); verifying "
        "its neighbours' key signatures and the threshold of survivor confirmations; the share "
        "and seed digests (SHA-256); loading its identity key and roster twice each.",
        "",
        "| clients | threshold | sign ms | verify ms | digests ms | key and roster files ms | total ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in results["checks"]:
        lines.append(
            f"| {c['clients']} | {c['threshold']} | {1e3 * c['sign-seconds']:.2f} | {1e3 * c['verify-seconds']:.2f} "
            f"| {1e3 * c['digests-seconds']:.3f} | {1e3 * c['identity-and-roster-files-seconds']:.2f} "
            f"| {1e3 * c['total-seconds']:.2f} |"
        )
    if results.get("federation"):
        lines += [
            "",
            "## Real federation (`flwr run`, default local training, 1 CPU per client, no roster)",
            "",
            "| clients | mode | fit phase s | round s (incl. central validation) | slowest client training s | secure stages s |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in results["federation"]:
            stages_text = ", ".join(f"{k.removesuffix('-seconds')} {v:.1f}" for k, v in r["secure-stage-seconds"].items())
            lines.append(
                f"| {r['clients']} | {r['mode']} | {r['fit-phase-seconds']:.1f} | {r['round-seconds']:.1f} "
                f"| {'masked' if r['mode'] == 'ours' else format(r['client-training-seconds-max'] or 0, '.1f')} "
                f"| {stages_text or '-'} |"
            )
        lines.append("")
        by_clients: dict[int, dict[str, dict]] = {}
        for r in results["federation"]:
            by_clients.setdefault(r["clients"], {})[r["mode"]] = r
        for clients, modes in sorted(by_clients.items()):
            if {"plain", "ours"} <= set(modes):
                ratio = modes["ours"]["round-seconds"] / modes["plain"]["round-seconds"]
                fit = modes["ours"]["fit-phase-seconds"] / modes["plain"]["fit-phase-seconds"]
                lines.append(f"* {clients} clients: secure round {ratio:.3f}× plain (fit phase {fit:.3f}×); "
                             "the target is ≤ 1.05×.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 10, 20])
    parser.add_argument("--federation-clients", type=int, nargs="*", default=[10])
    parser.add_argument("--skip-federation", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "secure_aggregation")
    args = parser.parse_args()
    torch.set_num_threads(1)

    results: dict = {
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch thread, {os.cpu_count()}-core CPU, no GPU)",
        "arguments": " ".join(sys.argv[1:]),
        "protocol": [],
        "checks": [],
        "federation": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        protocol_round("plain", min(args.clients), Path(scratch))  # warm-up: imports, allocator, caches
        for clients in args.clients:
            for mode in MODES:
                results["protocol"].append(protocol_round(mode, clients, Path(scratch)))
                print(json.dumps(results["protocol"][-1]), flush=True)
            results["checks"].append(check_costs(clients, Path(scratch)))
            print(json.dumps(results["checks"][-1]), flush=True)
    if not args.skip_federation:
        with tempfile.TemporaryDirectory() as scratch:
            for clients in args.federation_clients:
                for secure in (False, True):
                    results["federation"].append(federation_round(clients, secure, Path(scratch)))
                    print(json.dumps(results["federation"][-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    args.out.with_suffix(".md").write_text(_markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()
