"""The outermost client mod: a failure on this site reaches the server as its rule, never as its values.

Flower turns a ClientApp's exception into the text of its error reply, which the server
logs and keeps in ``metrics.json``. This mod catches every exception of the app below it
(training, evaluation, secure aggregation, site loading), writes the whole of it to the
hospital's own log and raises ``SiteFailure`` with only ``public_text``: the public part of
a ``RedactedError`` (rule and key), or just the exception's type.
"""

from __future__ import annotations

import logging

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from segguided_federation.redaction import public_text

log = logging.getLogger(__name__)


class SiteFailure(RuntimeError):
    """This site could not answer; the message is what the server may know of why."""


def redact_failures_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Pass ``msg`` on; turn any exception into a ``SiteFailure`` that names only the rule.

    Raises:
        SiteFailure: the app below failed (its full exception is in this site's log).
    """
    try:
        return call_next(msg, ctxt)
    except Exception as error:  # every failure is reported, and only its public part leaves
        log.error("this site could not answer a %s request: %s", msg.metadata.message_type, error, exc_info=error)
        raise SiteFailure(public_text(error)) from None
