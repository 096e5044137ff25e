"""What a hospital remembers of its secure-aggregation session, next to Flower's ``SecAggPlusState``.

Flower's state holds the session's keys and the shares this hospital keeps; this record
adds what our rules need across stages: which round and stage it is in (a hospital runs one
session per round, stage after stage), the session's signing key when no identity key is
configured, its neighbours' identities, the neighbours whose shares it holds, the
survivor set it confirmed, and which kind of share it revealed for whom. Both live in the
node's ``Context.state``, so they survive between the messages of a round.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from flwr.app import ConfigRecord, RecordDict

STATE_KEY = "segguided-secure-session"

SEED_SHARE = "seed"
KEY_SHARE = "key"


@dataclass
class SessionRecord:
    """The hospital's memory of its current session.

    Attributes:
        run_id: the Flower run of the session.
        round: its round (the requests' ``group_id``); 0 before the first session.
        stage: the last stage this hospital answered.
        session_key: PKCS#8 PEM of the session's signing key, when no identity key is configured.
        own_identity: this hospital's identity public key as it sent it at setup.
        own_signature: its signature of its SecAgg+ keys, as it sent it at setup.
        neighbour_ids: the key-sharing neighbours (this hospital included), in order.
        neighbour_identities: their identity public keys, in the same order.
        sources: neighbours whose shares this hospital received and whose pairwise masks it added.
        survivors: the survivor set it confirmed in the consistency check.
        revealed_ids: owners of the shares it revealed.
        revealed_kinds: ``seed`` or ``key`` for each of them.
    """

    run_id: int = 0
    round: int = 0
    stage: str = ""
    session_key: bytes = b""
    own_identity: bytes = b""
    own_signature: bytes = b""
    neighbour_ids: list[int] = field(default_factory=list)
    neighbour_identities: list[bytes] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    revealed_ids: list[int] = field(default_factory=list)
    revealed_kinds: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, state: RecordDict) -> "SessionRecord":
        if STATE_KEY not in state.config_records:
            return cls()
        stored = dict(state.config_records[STATE_KEY])
        return cls(**{name: stored[name] for name in cls.__dataclass_fields__ if name in stored})

    def save(self, state: RecordDict) -> None:
        state.config_records[STATE_KEY] = ConfigRecord(asdict(self))

    def start(self, run_id: int, server_round: int) -> None:
        """Forget the previous session and begin the one of ``server_round``."""
        fresh = SessionRecord(run_id=run_id, round=server_round)
        self.__dict__.update(fresh.__dict__)

    def identity_of(self, node_id: int) -> bytes:
        return self.neighbour_identities[self.neighbour_ids.index(node_id)]

    def revealed(self) -> dict[int, str]:
        return dict(zip(self.revealed_ids, self.revealed_kinds, strict=True))

    def remember_revealed(self, kinds: dict[int, str]) -> None:
        merged = {**self.revealed(), **kinds}
        self.revealed_ids, self.revealed_kinds = list(merged), list(merged.values())
