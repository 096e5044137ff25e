"""Adversarial review: attacks on the secure workflow that the existing attack tests do not cover.

Each test is one attack by one party (a malicious hospital, a deviating server) and the
property the README's threat model claims holds against it.
"""

from __future__ import annotations

from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Stage
from known_update_federation import known_update_federation

from segguided_federation.secure_protocol import DIGEST_BYTES, SHARE_DIGESTS, SHARE_HOLDERS

MALICIOUS, FRAMED = 3, 1


def _commit_to_a_wrong_share_for(holder: int):
    """``incoming`` hook: the malicious hospital's key-sharing reply commits to a share it did not send ``holder``."""

    def incoming(stage, message):
        if stage == Stage.SHARE_KEYS and message.metadata.src_node_id == MALICIOUS and not message.has_error():
            configs = message.content.config_records[RECORD_KEY_CONFIGS]
            holders = list(configs[SHARE_HOLDERS])
            digests = list(configs[SHARE_DIGESTS])
            index = holders.index(holder)
            # Flip the seed-share digest of the share the malicious hospital sent ``holder``.
            seed_digest = bytes(b ^ 0xFF for b in digests[index][:DIGEST_BYTES])
            digests[index] = seed_digest + digests[index][DIGEST_BYTES:]
            configs[SHARE_DIGESTS] = digests
        return message

    return incoming


def test_a_hospital_cannot_frame_an_honest_neighbour_as_revealing_a_bogus_share():
    """README threat model: one malicious hospital cannot "fail another hospital ... a bogus share names its sender".

    The malicious hospital commits (in its own share-keys reply) to a seed share for
    neighbour 1 other than the one it encrypted for it. Neighbour 1 honestly reveals the
    share it received; the server compares it with the malicious commitment and names
    neighbour 1 as the hospital that revealed a bogus share.
    """
    federation = known_update_federation(incoming=_commit_to_a_wrong_share_for(FRAMED))

    federation.run()

    (report,) = federation.reports
    assert report.aggregated, report.halted  # the other holders still reconstruct the malicious seed
    assert not any(failure.startswith(f"node {FRAMED}:") for failure in report.failures), report.failures
    # The mismatch is still on record, as a dispute between the two: either may have lied.
    assert report.disputed == [
        f"node {FRAMED}'s seed share of node {MALICIOUS} does not match node {MALICIOUS}'s commitment "
        "(left out; one of the two deviated)"
    ], report.disputed
