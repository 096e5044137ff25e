"""One malicious hospital against the secure workflow: it fails itself, never the ServerApp or the others.

Each test lets one hospital rewrite its own reply (``InProcessGrid.incoming``) in one stage
and checks that the workflow finishes, that the round aggregates the others exactly (or,
for words that would move the model out of any honest range, halts with the global model
unchanged) and that the failure names only that hospital.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import bytes_to_ndarray, ndarray_to_bytes
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)
from known_update_federation import CASES, known_update_federation


def _rewrite(stage: str, node: int, change):
    """An ``incoming`` hook: ``node`` passes its honest reply of ``stage`` through ``change``."""

    def incoming(reply_stage, message):
        if reply_stage == stage and message.metadata.src_node_id == node and not message.has_error():
            change(message.content)
        return message

    return incoming


def _configs(content):
    return content.config_records[RECORD_KEY_CONFIGS]


def _drop_record(content):
    del content.config_records[RECORD_KEY_CONFIGS]


def _drop_public_key(content):
    del _configs(content)[Key.PUBLIC_KEY_1]


def _garbage_public_key(content):
    _configs(content)[Key.PUBLIC_KEY_2] = b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n"


def _unknown_identity_type(content):
    _configs(content)["identity"] = b"ssh-foo AAAA"


def _garbage_vector(content):
    _configs(content)[Key.MASKED_PARAMETERS] = [b"\x93NUMPY garbage bytes"]


def _one_ciphertext_short(content):
    _configs(content)[Key.CIPHERTEXT_LIST] = list(_configs(content)[Key.CIPHERTEXT_LIST])[:-1]


def _one_share_short(content):
    _configs(content)[Key.SHARE_LIST] = list(_configs(content)[Key.SHARE_LIST])[:-1]


def _bogus_shares(content):
    rng = np.random.default_rng(7)
    shares = list(_configs(content)[Key.SHARE_LIST])
    # Plausible shares: the right index prefix and length, random share bytes.
    _configs(content)[Key.SHARE_LIST] = [share[:4] + rng.bytes(len(share) - 4) for share in shares]


def _padded(content):
    _configs(content)["padding"] = b"x" * 200_000


def _repeated_owner(content):
    owners = list(_configs(content)[Key.NODE_ID_LIST])
    _configs(content)[Key.NODE_ID_LIST] = [owners[0], *owners[:-1]]


def _garbage_confirmation(content):
    _configs(content)["survivors-signature"] = b"not a signature"


def _one_word_longer(content):
    vector = bytes_to_ndarray(_configs(content)[Key.MASKED_PARAMETERS][0])
    _configs(content)[Key.MASKED_PARAMETERS] = [ndarray_to_bytes(np.append(vector, np.uint32(5)))]


def _add_to_words(words: slice, amount: int):
    def change(content):
        vector = bytes_to_ndarray(_configs(content)[Key.MASKED_PARAMETERS][0]).copy()
        vector[words] += np.uint32(amount % 2**32)  # modulo 2**32, as the masks are
        _configs(content)[Key.MASKED_PARAMETERS] = [ndarray_to_bytes(vector)]

    return change


ALL = tuple(CASES)
MALFORMED = {
    # kind: (stage, malicious node, change, nodes whose update is summed)
    "no SecAgg record": (Stage.SETUP, 3, _drop_record, (1, 2, 4)),
    "setup reply without public key": (Stage.SETUP, 2, _drop_public_key, (1, 3, 4)),
    "garbage public key": (Stage.SETUP, 4, _garbage_public_key, (1, 2, 3)),
    "identity key of an unknown type": (Stage.SETUP, 1, _unknown_identity_type, (2, 3, 4)),
    "unequal share lists": (Stage.SHARE_KEYS, 3, _one_ciphertext_short, (1, 2, 4)),
    "garbage vector bytes": (Stage.COLLECT_MASKED_VECTORS, 2, _garbage_vector, (1, 3, 4)),
    # Node 1 answers first: a wrong length must not make every honest vector look wrong.
    "wrong-length vector arriving first": (Stage.COLLECT_MASKED_VECTORS, 1, _one_word_longer, (2, 3, 4)),
    "no record in the masked-vector reply": (Stage.COLLECT_MASKED_VECTORS, 4, _drop_record, (1, 2, 3)),
    "reply beyond the size cap": (Stage.COLLECT_MASKED_VECTORS, 3, _padded, (1, 2, 4)),
    # A survivor's vector is in the sum from here on, and stays there.
    "garbage survivor confirmation": ("consistency-check", 2, _garbage_confirmation, ALL),
    "unequal unmask lists": (Stage.UNMASK, 2, _one_share_short, ALL),
    "repeated share owner": (Stage.UNMASK, 4, _repeated_owner, ALL),
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_reply_fails_only_its_sender_and_the_others_aggregate(kind):
    stage, node, change, summed = MALFORMED[kind]
    federation = known_update_federation(incoming=_rewrite(stage, node, change))

    result = federation.run()  # the workflow survives

    (report,) = federation.reports
    assert report.aggregated, report.halted
    for got, want in zip(result, federation.fedavg(summed), strict=True):
        assert np.max(np.abs(got - want)) <= federation.tolerance()
    assert report.training["train-cases"] == sum(CASES[n] for n in summed)
    assert report.failures and all(failure.startswith(f"node {node}:") for failure in report.failures), report.failures


def test_bogus_shamir_shares_are_left_out_as_disputed_and_the_others_aggregate():
    """A hospital that reveals bogus shares is not trusted, nor is it failed on that evidence:
    the server cannot tell it from an owner that committed falsely (see the adversarial tests)."""
    federation = known_update_federation(incoming=_rewrite(Stage.UNMASK, 2, _bogus_shares))

    result = federation.run()

    (report,) = federation.reports
    assert report.aggregated, report.halted
    for got, want in zip(result, federation.fedavg(ALL), strict=True):
        assert np.max(np.abs(got - want)) <= federation.tolerance()
    assert report.disputed and all(reason.startswith("node 2's ") for reason in report.disputed), report.disputed
    assert not report.failures, report.failures


WORDS_OUT_OF_RANGE = {
    # kind: (change to node 3's masked vector, the bound the halt names)
    "total weight 0": (_add_to_words(slice(0, 1), -sum(CASES.values())), "total weight"),
    "total weight beyond survivors x max-cases": (_add_to_words(slice(0, 1), 10**6), "total weight"),
    "update words beyond the clipping range": (_add_to_words(slice(4, None), 2**30), "clipping range"),
}


@pytest.mark.parametrize("kind", WORDS_OUT_OF_RANGE)
def test_out_of_range_words_halt_the_round_and_keep_the_model(kind):
    change, bound = WORDS_OUT_OF_RANGE[kind]
    federation = known_update_federation(incoming=_rewrite(Stage.COLLECT_MASKED_VECTORS, 3, change))

    result = federation.run()

    (report,) = federation.reports
    assert not report.aggregated
    assert bound in report.halted
    for got, before in zip(result, federation.initial, strict=True):
        np.testing.assert_array_equal(got, before)
