"""A client's failure as one clean line: what the operator reads in the log and ``metrics.json``.

A ClientApp's exception reaches the ServerApp wrapped several times: Flower's runtime
formats it as ``<class 'Type'>:<'message'>`` inside an ``Error`` (``code``, ``reason``),
the simulation engine first wraps it in a ``ClientAppException`` whose message is the
whole remote traceback, and Flower's default workflows then wrap the ``Error`` in a bare
``Exception``. ``describe_failure`` undoes all of that and keeps the exception's own last
line (``SiteError: site-3: no labelled case ...``), without file paths of Flower's code,
ANSI colours or quoting debris.
"""

from __future__ import annotations

import re

from flwr.app.error import Error
from flwr.common import EvaluateRes, FitRes
from flwr.server.client_proxy import ClientProxy

MAX_LENGTH = 300
"""Longest reason kept; the rest stays in the logs."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLASS_WRAPPER = re.compile(r"^<class '(?P<type>[\w.]+)'>:<'(?P<message>.*)'>$", re.DOTALL)
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(?P<name>[A-Z]\w*(?:Error|Exception|Refused|Failed|Interrupt)\w*): (?P<message>.+)$")
_FLOWER_PREAMBLE = re.compile(r"^\s*Exception ClientAppException occurred\. Message:\s*")
_ERROR_REPR = re.compile(r"^Error\(code=(?P<code>\d+), reason=(?P<quote>['\"])(?P<reason>.*)(?P=quote)\)$", re.DOTALL)
_TRAILING_DEBRIS = re.compile(r"""(?:['"]>['"]?\)?|['"]\)|['"]+)$""")
"""What Flower's quoting leaves at the end of a cut-off reason: ``'>``, ``'>')``, ``')``, quotes."""
_NOISE = ("Traceback (most recent call last)", "File \"", "^", "~", "The above exception", "During handling")

Failure = tuple[ClientProxy, FitRes | EvaluateRes] | BaseException


def _unwrap(text: str) -> str:
    """Strip Flower's ``<class 'T'>:<'...'>`` wrapping (possibly nested) and unescape newlines."""
    text = _ANSI.sub("", text).replace("\\n", "\n").replace("\\'", "'").strip()
    if error := _ERROR_REPR.match(text):  # an ``Error`` that was turned into text with repr()
        text = error["reason"].strip()
    while match := _CLASS_WRAPPER.match(text):
        name, message = match["type"].rsplit(".", 1)[-1], match["message"].strip()
        if name == "ClientAppException":  # the simulation's wrapper: its message is the remote traceback
            text = _FLOWER_PREAMBLE.sub("", message)
        else:
            text = f"{name}: {message}" if message else name
    return text


def _last_meaningful_line(text: str) -> str:
    lines = [_FLOWER_PREAMBLE.sub("", line).strip().strip("'\"") for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith(_NOISE)]
    if not lines:
        return ""
    exception_lines = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return exception_lines[-1] if exception_lines else lines[-1]


def describe_failure(failure: Failure) -> str:
    """One line saying which node failed and why.

    Args:
        failure: what Flower's workflows put in ``failures``: ``(proxy, result)`` for a
            client that answered with a non-OK status, or an exception (an ``Error``
            reply wrapped in ``Exception``, a timeout, ...).

    Returns:
        ``"node <id>: <ExceptionType>: <message>"`` (the node when known), at most
        ``MAX_LENGTH`` characters, no newline.
    """
    prefix = ""
    if isinstance(failure, BaseException):
        payload = failure.args[0] if len(failure.args) == 1 else None
        if isinstance(payload, Error):
            text = payload.reason or f"error code {payload.code}"
        else:
            text = str(failure) or type(failure).__name__
    else:
        proxy, result = failure
        prefix = f"node {proxy.node_id}: "
        text = result.status.message
    line = _last_meaningful_line(_unwrap(text)) or text.strip()
    line = " ".join(line.split())
    if match := _EXCEPTION_LINE.match(line):
        line = f"{match['name']}: {match['message']}"
    line = prefix + _TRAILING_DEBRIS.sub("", line)
    return line if len(line) <= MAX_LENGTH else line[: MAX_LENGTH - 1] + "…"
