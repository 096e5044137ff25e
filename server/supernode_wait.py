"""Waiting for SuperNodes with a deadline and a voice: the run says whom it waits for, and gives up.

Flower's legacy client manager blocks up to a day, silently, until ``min-available-clients``
SuperNodes are connected. Here the wait logs how many are connected every
``REPORT_SECONDS`` and ends after ``client-wait-timeout`` seconds with
``SuperNodesUnavailable``, which fails the run with a message naming both keys; a
resumed run continues from its last checkpoint.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from flwr.server.client_manager import SimpleClientManager

log = logging.getLogger(__name__)

REPORT_SECONDS = 30.0
"""How often a wait in progress is logged."""

POLL_SECONDS = 0.5


class SuperNodesUnavailable(RuntimeError):
    """Fewer SuperNodes than ``min-available-clients`` connected within ``client-wait-timeout``."""


def wait_for_supernodes(connected: Callable[[], int], needed: int, timeout: float, purpose: str) -> int:
    """Block until ``connected()`` reaches ``needed``, logging progress; return the count.

    Args:
        connected: how many SuperNodes are connected now.
        needed: how many the run needs (``min-available-clients``).
        timeout: seconds to wait at most (``client-wait-timeout``).
        purpose: what the nodes are needed for, for the log (``"round 3"``).

    Raises:
        SuperNodesUnavailable: still too few after ``timeout`` seconds.
    """
    started = time.monotonic()
    next_report = started
    while (count := connected()) < needed:
        now = time.monotonic()
        if now - started >= timeout:
            raise SuperNodesUnavailable(
                f"{purpose}: only {count} SuperNode(s) connected after {timeout:.0f} s, but "
                f"min-available-clients={needed}; start more SuperNodes (simulation: num-supernodes), lower "
                "min-available-clients, or wait longer with client-wait-timeout"
            )
        if now >= next_report:
            log.info("%s: waiting for %d SuperNode(s) (min-available-clients), %d connected; giving up in %.0f s",
                     purpose, needed, count, timeout - (now - started))
            next_report = now + REPORT_SECONDS
        time.sleep(POLL_SECONDS)
    return count


class PatientClientManager(SimpleClientManager):
    """Flower's client manager whose waits log their progress and end after ``timeout`` seconds.

    Args:
        timeout: ``client-wait-timeout``.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def wait_for(self, num_clients: int, timeout: int = 86400) -> bool:
        wait_for_supernodes(lambda: len(self.clients), num_clients, min(float(timeout), self.timeout),
                            "sampling clients")
        return True
