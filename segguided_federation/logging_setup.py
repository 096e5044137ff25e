"""Send this app's log records to Flower's console handler, so ``flwr run --stream`` shows them."""

from __future__ import annotations

import logging

from flwr.common.logger import FLOWER_LOGGER

APP_PACKAGES = ("server", "client", "segguided_federation", "segguided_model")


def route_to_flower_console(level: int = logging.INFO) -> None:
    """Attach Flower's handlers to our package loggers (idempotent)."""
    for name in APP_PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        for handler in FLOWER_LOGGER.handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
