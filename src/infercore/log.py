"""Library logging: ``INFERCORE_LOGLEVEL`` (debug, info, warning, error) sets the level.

Without the variable the ``infercore`` logger emits warnings and errors only, and hot
paths log at debug level, so nothing is printed while kernels run.
"""

from __future__ import annotations

import logging
import os

__all__ = ["configure", "get_logger"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure() -> None:
    """Apply ``INFERCORE_LOGLEVEL`` to the ``infercore`` logger (idempotent)."""
    logger = logging.getLogger("infercore")
    level_name = os.environ.get("INFERCORE_LOGLEVEL", "").strip().upper()
    if not level_name:
        logger.setLevel(logging.WARNING)
        return
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        logger.warning(
            "INFERCORE_LOGLEVEL=%r is not a level; use debug, info, warning or error", level_name
        )
        return
    logger.setLevel(level)
    if not any(getattr(h, "_infercore", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._infercore = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
