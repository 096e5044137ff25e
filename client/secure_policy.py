"""A hospital's own rules for secure aggregation, from its node config (its site config file), never the server.

Keys (kebab-case, in the site config or ``--node-config``):

* ``secure-aggregation-min-clients`` (3): the fewest clients and shares a session may be
  announced with. Below 3, one other hospital can read this one's update from the sum.
  Clients lost during the round may leave fewer survivors, down to the threshold.
* ``secure-aggregation-lowest-max-cases`` (1000) and ``secure-aggregation-lowest-clipping-range``
  (1.0): the smallest ``secure-aggregation-max-cases`` / ``secure-aggregation-clipping-range``
  this hospital accepts from the server. A server that set them lower would learn from
  this hospital's failure whether its case count / largest update exceeds them; under
  differential privacy (weight 1, updates clipped to the range) neither can fail.
* ``secure-aggregation-identity-key``: the private key that signs this hospital's per-round
  keys: its SuperNode authentication key (OpenSSH ECDSA) or another EC key. Without it the
  hospital signs with a key made for the session, bound to nothing.
* ``secure-aggregation-roster``: the federation's registered public keys (OpenSSH lines),
  installed by this hospital's operator; neighbours not on it, or whose signatures fail,
  are refused. Without it (simulation) neighbours' keys are not bound to identities and
  the hospital says so in its log and in the key binding it reports.

The reconstruction threshold must always exceed half of the neighbours
(``segguided_federation.secure_protocol.majority_threshold``); that rule is not a setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pydantic import Field, ValidationError, model_validator

from segguided_federation.config_model import KebabModel, kebab_case
from segguided_federation.redaction import RedactedError
from segguided_federation.secure_identity import IdentityKey, Roster


class SecurePolicyError(RedactedError):
    """The hospital's secure-aggregation settings are invalid; ``public`` names the keys, ``private`` the values."""


class SecureAggregationPolicy(KebabModel):
    """What this hospital requires of every secure-aggregation session (see the module docstring)."""

    secure_aggregation_min_clients: int = Field(3, ge=3)
    secure_aggregation_lowest_max_cases: int = Field(1000, ge=1)
    secure_aggregation_lowest_clipping_range: float = Field(1.0, gt=0.0)
    secure_aggregation_identity_key: Path | None = None
    secure_aggregation_roster: Path | None = None

    @model_validator(mode="after")
    def _roster_needs_an_identity(self) -> "SecureAggregationPolicy":
        if self.secure_aggregation_roster is not None and self.secure_aggregation_identity_key is None:
            raise ValueError(
                "secure-aggregation-roster is set but secure-aggregation-identity-key is not: neighbours that check "
                "the roster would refuse this hospital's unsigned keys"
            )
        return self

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The node-config keys this policy reads."""
        return tuple(kebab_case(name) for name in cls.model_fields)

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> "SecureAggregationPolicy":
        """The policy from the node config's ``secure-aggregation-*`` keys; defaults for those absent.

        Raises:
            SecurePolicyError: a key has an invalid value (the public part names only the keys).
        """
        values = {key: node_config[key] for key in cls.keys() if key in node_config}
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            keys = sorted({kebab_case(str(item["loc"][0])) for item in error.errors() if item["loc"]}) or ["policy"]
            raise SecurePolicyError(
                f"this hospital's secure-aggregation settings are invalid: {', '.join(keys)}", str(error)
            ) from None

    def identity(self) -> IdentityKey | None:
        """The configured identity key, or None.

        Raises:
            IdentityError: the key file cannot be used.
        """
        if self.secure_aggregation_identity_key is None:
            return None
        return IdentityKey.load(self.secure_aggregation_identity_key)

    def roster(self) -> Roster | None:
        """The installed roster, or None.

        Raises:
            IdentityError: the roster file cannot be used.
        """
        return Roster.load(self.secure_aggregation_roster) if self.secure_aggregation_roster is not None else None
