"""Errors in two parts: what may leave a hospital (the rule and the key) and what stays in its log (its values).

A client's exception text reaches the server: Flower puts it into the error reply, the
server logs it and keeps it in ``metrics.json``. An error raised on a hospital's data or
settings therefore says *which rule* failed in ``public`` and keeps the case count, the
update size or the data path in ``private``. ``client/failure_redaction.py`` sends only
``public_text`` of any exception and logs the rest where the hospital reads it.
"""

from __future__ import annotations


class RedactedError(Exception):
    """An error whose ``public`` part may reach the server and whose ``private`` part may not.

    ``str()`` gives both, for the hospital's own log.

    Args:
        public: what went wrong, by rule and key, with no value of the hospital's data.
        private: the values behind it (counts, magnitudes, paths); empty if none.
    """

    def __init__(self, public: str, private: str = "") -> None:
        super().__init__(public, private)  # both in args, so a pickled copy keeps them apart
        self.public = public
        self.private = private

    def __str__(self) -> str:
        return f"{self.public} ({self.private})" if self.private else self.public


def public_text(error: BaseException) -> str:
    """What of ``error`` may be sent to the server: its public part, or only its type."""
    if isinstance(error, RedactedError):
        return error.public
    return f"{type(error).__name__} (details in the hospital's log)"
