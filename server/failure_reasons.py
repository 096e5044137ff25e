"""A client's failure as one clean line: what the operator reads in the log and ``metrics.json``.

A ClientApp's exception reaches the ServerApp wrapped several times: Flower's runtime
formats it as ``<class 'Type'>:<'message'>`` inside an ``Error`` (``code``, ``reason``),
the simulation engine first wraps it in a ``ClientAppException`` whose message is the
whole remote traceback, and Flower's default workflows then wrap the ``Error`` in a bare
``Exception``. ``describe_failure`` undoes all of that and keeps the exception's own last
line (``SiteError: site-3: no labelled case ...``), without file paths of Flower's code,
ANSI colours or quoting debris.

The text is the hospital's own and may be hostile, so the node it is attributed to never
comes from it: ``NodeFailure`` and ``NodeError`` carry the node id from the server's own
bookkeeping (the reply's source), and ``"node <id>: "`` is put in front after the text is
reduced, so that no line a hospital writes can name another node. Only the last
``MAX_INPUT`` characters are read, with expressions that take time linear in them (a
reply of quotes or of ``ErrorErrorError...`` took minutes with the earlier ones).
"""

from __future__ import annotations

import re
import unicodedata

from flwr.app.error import Error
from flwr.common import EvaluateRes, FitRes
from flwr.server.client_proxy import ClientProxy

MAX_LENGTH = 300
"""Longest reason kept; the rest stays in the logs."""

MAX_INPUT = 16_384
"""Characters of a reason read (its end, where a traceback's exception line is)."""

_ANSI = re.compile(r"\x1b(?:\[[0-?]{0,64}[ -/]{0,8}[@-~]|[@-Z\\-_])")
"""Terminal escape sequences: colours, cursor movements, line erasing (CSI) and two-character escapes."""
_CLASS_WRAPPER = re.compile(r"^<class '(?P<type>[\w.]+)'>:<'(?P<message>.*)'>$", re.DOTALL)
_EXCEPTION_LINE = re.compile(
    r"^(?:[\w.]{1,200}\.)?(?P<name>[A-Z]\w{0,80}?(?:Error|Exception|Refused|Failed|Interrupt)\w{0,40}): (?P<message>.+)$"
)
_FLOWER_PREAMBLE = re.compile(r"^\s*Exception ClientAppException occurred\. Message:\s*")
_ERROR_REPR = re.compile(r"^Error\(code=(?P<code>\d+), reason=(?P<quote>['\"])(?P<reason>.*)(?P=quote)\)$", re.DOTALL)
_REVERSED_DEBRIS = re.compile(r"""\)?['"]?>['"]|\)['"]|['"]+""")
"""What Flower's quoting leaves at the end of a cut-off reason (``'>``, ``'>')``, ``')``, quotes), reversed:
matched once at the start of the reversed line instead of searched for at every position of it."""
_NODE_PREFIX = re.compile(r"^(?:\s*node\s*\d{1,30}\s*:\s*)+", re.IGNORECASE)
_NOISE = ("Traceback (most recent call last)", "File \"", "^", "~", "The above exception", "During handling")


class NodeFailure(Exception):
    """One node's failure, as the server found it.

    Args:
        node_id: the node, from the server's own bookkeeping (a reply's source node).
        reason: what went wrong: the node's own error text, reduced to its exception line
            by ``describe_failure``, or (``verbatim``) a rule the server wrote.
        verbatim: keep ``reason`` as it is (whitespace folded) instead of reducing it.
    """

    def __init__(self, node_id: int, reason: str, verbatim: bool = False) -> None:
        super().__init__(f"node {node_id}: {reason}")
        self.node_id = node_id
        self.reason = reason
        self.verbatim = verbatim


class NodeError(Error):
    """An error reply's ``Error``, tagged with the node that sent it (``decodable_replies``).

    Flower's workflows put ``Exception(reply.error)`` in ``failures`` and drop the reply's
    source; this ``Error`` keeps it for ``describe_failure``.
    """

    def __init__(self, code: int, reason: str | None, node_id: int, verbatim: bool = False) -> None:
        super().__init__(code, reason)
        self.__dict__.update({"_node_id": node_id, "_verbatim": verbatim})

    @property
    def node_id(self) -> int:
        return int(self.__dict__["_node_id"])

    @property
    def verbatim(self) -> bool:
        return bool(self.__dict__["_verbatim"])


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


def _without_debris(line: str) -> str:
    debris = _REVERSED_DEBRIS.match(line[::-1])
    return line[: len(line) - debris.end()] if debris else line


def _printable(line: str) -> str:
    """``line`` without control and format characters (Unicode category C: backspaces, cursor
    movements, bidi overrides), which could make a terminal show another node's name, and
    without a leading ``node <id>:`` that would read as the server's attribution."""
    line = _ANSI.sub("", line)
    line = "".join(character for character in line if not unicodedata.category(character).startswith("C"))
    return _NODE_PREFIX.sub("", line)


def reduced_reason(text: str) -> str:
    """A hospital's error text as one printable line: its exception line, without Flower's
    wrapping and quoting, control characters or a ``node <id>:`` of its own; the last
    ``MAX_INPUT`` characters read."""
    text = text[-MAX_INPUT:]
    line = _last_meaningful_line(_unwrap(text)) or text.strip()
    line = " ".join(_printable(line).split())
    if match := _EXCEPTION_LINE.match(line):
        line = f"{match['name']}: {match['message']}"
    return _without_debris(line)


def describe_failure(failure: Failure) -> str:
    """One line saying which node failed and why.

    Args:
        failure: what the workflows put in ``failures``: ``(proxy, result)`` for a
            client that answered with a non-OK status, a ``NodeFailure``, or an exception
            (an ``Error`` reply wrapped in ``Exception``, a timeout, ...).

    Returns:
        ``"node <id>: <ExceptionType>: <message>"`` (the node when known, never taken from
        the text), at most ``MAX_LENGTH`` characters, no newline.
    """
    node, verbatim = None, False
    if isinstance(failure, NodeFailure):
        node, text, verbatim = failure.node_id, failure.reason, failure.verbatim
    elif isinstance(failure, BaseException):
        payload = failure.args[0] if len(failure.args) == 1 else None
        if isinstance(payload, Error):
            text = payload.reason or f"error code {payload.code}"
            if isinstance(payload, NodeError):
                node, verbatim = payload.node_id, payload.verbatim
        else:
            text = str(failure) or type(failure).__name__
    else:
        proxy, result = failure
        node, text = proxy.node_id, result.status.message
    line = " ".join(text[:MAX_INPUT].split()) if verbatim else (reduced_reason(text) or "no reason given")
    if node is not None:
        line = f"node {node}: {line}"
    return line if len(line) <= MAX_LENGTH else line[: MAX_LENGTH - 1] + "…"
