"""One secure round's parameters, state and report, and the rules that shape the round.

``SecureAggregationSettings`` comes from the run config; ``SecureWorkflowState`` is what
the workflow (``server/secure_aggregation.py``) keeps between its five stages;
``SecureRoundReport`` is what the run's history keeps of the round.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

from segguided_federation.config_model import kebab_case
from segguided_federation.differential_privacy import PrivacySettings
from segguided_federation.run_config import RunConfig
from segguided_federation.secure_protocol import SessionId, majority_threshold
from server.secure_replies import KeySharesReply, SetupReply
from server.secure_unmasking import KEY, SEED


@dataclass(frozen=True)
class SecureAggregationSettings:
    """The protocol's parameters, from the ``secure-aggregation-*`` and ``dp-*`` run-config keys.

    Attributes:
        num_shares: fraction of a round's clients each client shares its secrets with.
        reconstruction_threshold: fraction of those shares that unmask (raised to a majority).
        timeout: seconds to wait for replies in each stage.
        clipping_range: largest ``|Δ|`` per weight (``dp-clipping-norm`` under DP).
        max_cases: largest case count of one client (1 under DP: unweighted).
        privacy: central DP parameters, or ``None``.
    """

    num_shares: float = 1.0
    reconstruction_threshold: float = 0.6
    timeout: float | None = 1800.0
    clipping_range: float = 1.0
    max_cases: int = 1000
    privacy: PrivacySettings | None = None

    @classmethod
    def from_run_config(cls, config: RunConfig) -> "SecureAggregationSettings":
        privacy = None
        if config.differential_privacy:
            privacy = PrivacySettings(
                noise_multiplier=config.dp_noise_multiplier, clipping_norm=config.dp_clipping_norm, delta=config.dp_delta
            )
        return cls(
            num_shares=config.secure_aggregation_num_shares,
            reconstruction_threshold=config.secure_aggregation_reconstruction_threshold,
            timeout=config.secure_aggregation_timeout,
            clipping_range=privacy.clipping_norm if privacy else config.secure_aggregation_clipping_range,
            max_cases=1 if privacy else config.secure_aggregation_max_cases,
            privacy=privacy,
        )


@dataclass
class SecureRoundReport:
    """What one secure round revealed and cost; becomes ``secure-aggregation`` in the history.

    ``key-binding`` is ``roster`` when every key holder checked its neighbours against a
    roster of registered identities, else ``none: ...`` (simulation: keys bound to nothing).
    ``disputed`` lists the revealed shares left out because they did not match their
    owner's commitment, naming owner and holder (either may have deviated; neither is
    counted as failed on that evidence).
    """

    round: int
    sampled: int = 0
    survivors: int = 0
    num_shares: int = 0
    threshold: int = 0
    key_binding: str = ""
    aggregated: bool = False
    halted: str = ""
    failures: list[str] = field(default_factory=list)
    disputed: list[str] = field(default_factory=list)
    training: dict[str, float] = field(default_factory=dict)
    tolerance: float = 0.0
    epsilon: float | None = None
    delta: float | None = None
    timing: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {kebab_case(key): value for key, value in asdict(self).items()}


@dataclass
class SecureWorkflowState(WorkflowState):
    """Flower's workflow state plus what our stages add.

    Attributes:
        session: the run and round every signature and digest is bound to.
        halt: why the round stopped, if it did.
        setup_replies: node → its checked keys and identity.
        key_shares: node → its checked shares and commitments (the key holders).
        sources: survivor-to-be → the key holders whose shares it was forwarded.
        survivors: nodes whose masked vectors are in the sum.
        signers: survivor → its signature of the survivor set.
    """

    session: SessionId = SessionId(0, 0)
    halt: str = ""
    setup_replies: dict[int, SetupReply] = field(default_factory=dict)
    key_shares: dict[int, KeySharesReply] = field(default_factory=dict)
    sources: dict[int, list[int]] = field(default_factory=dict)
    survivors: list[int] = field(default_factory=list)
    signers: dict[int, bytes] = field(default_factory=dict)


def share_count(fraction: float, clients: int) -> int:
    """Shares per secret for ``clients`` sampled: Flower's rule (odd, at least 3 or everyone)."""
    shares = round(fraction * clients)
    if shares < clients and shares % 2 == 0:
        shares += 1
    return clients if shares <= 2 else min(shares, clients)


def reconstruction_threshold(fraction: float, shares: int) -> int:
    """Shares needed to unmask: ``fraction`` of ``shares``, but always more than half of them.

    Hospitals refuse a threshold at or below half of their neighbours
    (``client/secure_checks.py``): with honest holders, no server could then collect a
    threshold of both kinds of share of one hospital.
    """
    return min(shares, max(round(fraction * shares), majority_threshold(shares)))


def neighbour_ring(nodes: list[int], shares: int) -> dict[int, set[int]]:
    """SecAgg+'s neighbourhoods: each node and the ``shares // 2`` before and after it in ``nodes`` (a ring)."""
    half = shares >> 1
    return {node: {nodes[(index + offset) % len(nodes)] for offset in range(-half, half + 1)}
            for index, node in enumerate(nodes)}


def repeating_keys(replies: dict[int, SetupReply]) -> set[int]:
    """Nodes presenting a public key or identity that another node presents too."""
    holders: dict[bytes, set[int]] = {}
    for node, reply in replies.items():
        for key in {*reply.public_keys, reply.identity}:
            holders.setdefault(key, set()).add(node)
    return {node for nodes in holders.values() if len(nodes) > 1 for node in nodes}


def key_binding(replies: dict[int, SetupReply]) -> str:
    unbound = sum(reply.key_binding != "roster" for reply in replies.values())
    if replies and not unbound:
        return "roster"
    return (
        f"none: {unbound} of {len(replies)} clients check no secure-aggregation-roster, so their neighbours' keys "
        "are not bound to registered hospitals (simulation only)"
    )


def secrets_to_recover(state: SecureWorkflowState) -> dict[int, str]:
    """Whose secret the unmasking needs: every survivor's seed, and the key of every key holder
    that dropped out after a survivor added a pairwise mask with it."""
    survivors = set(state.survivors)
    dropped = {source for s in state.survivors for source in state.sources[s]} - survivors
    return {**{n: SEED for n in survivors}, **{n: KEY for n in dropped}}
