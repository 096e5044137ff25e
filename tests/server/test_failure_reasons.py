"""A client's failure becomes one clean line, however Flower wrapped it on the way."""

from __future__ import annotations

import traceback

import pytest
from flwr.app.error import Error
from flwr.clientapp.client_app import ClientAppException
from flwr.common import Code, FitRes, Parameters, Status

from server.failure_reasons import MAX_LENGTH, describe_failure


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
