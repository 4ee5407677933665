"""vLLM general plugin for infercore (entry point ``vllm.general_plugins: infercore``).

vLLM calls :func:`register` in every process it starts. Importing this package needs
neither vLLM nor a GPU; the integration itself lives in
:mod:`infercore.integrations.vllm` and is imported only when vLLM calls the hook.
"""

from __future__ import annotations

import logging

__all__ = ["call_counts", "register"]

log = logging.getLogger("vllm_infercore")


def register() -> None:
    """Install infercore's ops and attention backend into vLLM (re-entrant, never raises).

    Without vLLM, or with a vLLM version outside the supported range, it logs why and
    does nothing; a failure while registering is logged and leaves vLLM's own
    implementations in place.
    """
    try:
        from infercore.integrations import vllm as integration
    except ImportError as exc:
        log.warning("infercore vLLM plugin inactive: %s", exc)
        return
    integration.register()


def call_counts() -> dict[str, int]:
    """How many times each replacement ran infercore in this process, by vLLM op name."""
    from infercore.integrations import vllm as integration

    return integration.call_counts()
