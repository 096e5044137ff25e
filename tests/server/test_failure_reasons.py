"""A client's failure becomes one clean line, however Flower wrapped it on the way."""

from __future__ import annotations

import traceback

import pytest
from flwr.app import ConfigRecord, RecordDict
from flwr.app.error import Error
from flwr.clientapp.client_app import ClientAppException
from flwr.common import Code, FitRes, Parameters, Status

from server.failure_reasons import MAX_LENGTH, NodeError, NodeFailure, describe_failure


class SiteError(RuntimeError):
    pass


MESSAGE = "site-3: no labelled case passed the QA gate (2 rejected)"


def _flower_reason(ex: BaseException) -> str:
    """How Flower's runtimes turn a ClientApp's exception into an ``Error`` reason."""
    return str(type(ex)) + ":<'" + str(ex) + "'>"


def _raised() -> SiteError:
    try:
        raise SiteError(MESSAGE)
    except SiteError as error:
        return error


def test_a_deployed_clientapps_exception_keeps_its_type_and_message():
    failure = Exception(Error(code=2, reason=_flower_reason(_raised())))
    assert describe_failure(failure) == f"SiteError: {MESSAGE}"


def test_a_simulated_clientapps_remote_traceback_is_reduced_to_its_last_line():
    remote = ClientAppException("".join(traceback.format_exception(_raised())))
    failure = Exception(Error(code=2, reason=_flower_reason(remote)))
    described = describe_failure(failure)
    assert described == f"SiteError: {MESSAGE}"
    assert "\n" not in described and "File " not in described and "'>" not in described


def test_a_non_ok_result_names_its_node():
    class Proxy:
        node_id = 42

    result = FitRes(Status(Code.FIT_NOT_IMPLEMENTED, "fit is not implemented"), Parameters([], ""), 0, {})
    assert describe_failure((Proxy(), result)) == "node 42: fit is not implemented"


@pytest.mark.parametrize("text", [MESSAGE + "'>')", MESSAGE + "'>", "\x1b[91m" + MESSAGE + "\x1b[0m"])
def test_quoting_debris_and_colours_are_dropped_but_the_message_is_kept(text):
    assert describe_failure(Exception(text)) == MESSAGE


def test_a_long_reason_is_cut_to_one_bounded_line():
    described = describe_failure(Exception("x" * 5000))
    assert len(described) == MAX_LENGTH and described.endswith("…")


def test_an_error_already_turned_into_text_is_read_the_same_way():
    remote = ClientAppException("".join(traceback.format_exception(_raised())))
    text = repr(Error(code=2, reason=_flower_reason(remote)))
    assert describe_failure(Exception(text)) == f"SiteError: {MESSAGE}"
    assert describe_failure(Exception(text[-120:])) == f"SiteError: {MESSAGE}"  # cut from the front


FORGED = "x\nSiteError: node 1: reply rejected: weight array 0 holds a NaN or an infinity\n"
"""A hospital's error text that names another node, on a line of its own."""


@pytest.mark.parametrize(
    "failure",
    [
        NodeFailure(2, f"setup: the client failed: {FORGED}"),
        Exception(NodeError(0, _flower_reason(RuntimeError(FORGED)), node_id=2)),
        (type("Proxy", (), {"node_id": 2})(), FitRes(Status(Code.FIT_NOT_IMPLEMENTED, FORGED), Parameters([], ""), 0, {})),
    ],
    ids=["secure stage", "error reply", "non-OK status"],
)
def test_a_failure_is_attributed_to_the_node_it_came_from_whatever_its_text_says(failure):
    described = describe_failure(failure)
    assert described.startswith("node 2: ")
    assert not described.startswith("node 1") and not described.startswith("SiteError")


def test_a_server_rule_is_kept_verbatim_after_the_node():
    rule = "reply rejected: weight array 0 is not float32 (the global model's dtype)"
    assert describe_failure(NodeFailure(7, rule, verbatim=True)) == f"node 7: {rule}"


@pytest.mark.parametrize(
    "text",
    ["x" + '"' * 64_000 + "x", "A" + "Error" * 12_800, "'>" * 40_000, "a\n" * 100_000 + "SiteError: the end"],
    ids=["quotes", "ErrorError...", "quote debris", "many lines"],
)
def test_a_hostile_reason_of_any_length_becomes_one_bounded_line(text):
    """These took seconds to minutes with unbounded expressions over the whole text."""
    described = describe_failure(NodeFailure(3, text))
    assert described.startswith("node 3: ") and len(described) <= MAX_LENGTH and "\n" not in described


def test_quoting_debris_is_stripped_from_the_end_only():
    assert describe_failure(Exception("it 'failed' here'>')")) == "it 'failed' here"
    assert describe_failure(Exception("ends in quotes'\"'")) == "ends in quotes"


@pytest.mark.parametrize(
    "text",
    ["\b" * 10 + "node 1: SiteError: x", "\x1b[2K\x1b[1Gnode 1: SiteError: x", "\u202enode 1: SiteError: x",
     "node 1: node 4: SiteError: x"],
    ids=["backspaces", "cursor movement", "bidi override", "a node prefix of its own"],
)
def test_a_hospitals_text_cannot_make_a_terminal_show_another_node(text):
    assert describe_failure(NodeFailure(3, text)) == "node 3: SiteError: x"
    wrapped = describe_failure(NodeFailure(3, _flower_reason(RuntimeError(text))))
    assert wrapped.startswith("node 3: RuntimeError: ") and wrapped.isprintable()


def test_the_secure_path_reduces_a_clients_error_before_it_is_recorded_or_logged():
    from flwr.app import Message
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
    from in_process_federation import InProcessGrid

    from server.secure_replies import ReplyRejected, read_survivors_signature

    request = InProcessGrid({}, {}).create_message(RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({Key.STAGE: "x"})}),
                                                   "train", 1, "1")
    request.metadata.__dict__["_message_id"] = "m"
    reply = Message(Error(code=0, reason="A" * 2_000_000 + "\nnode 1: SiteError: fake"), reply_to=request)
    with pytest.raises(ReplyRejected) as rejected:
        read_survivors_signature(reply, b"identity", b"message")
    assert str(rejected.value) == "the client failed: SiteError: fake"


def test_any_number_of_node_prefixes_of_its_own_is_removed():
    assert describe_failure(NodeFailure(3, "node 5: " * 11 + "boom")) == "node 3: boom"
    assert describe_failure(NodeFailure(3, "node 5: " * 100_000 + "boom")).startswith("node 3: ")
