"""Which engine serves: :func:`make_service` builds the responder service for a configuration.

Why a module of its own: the two engines are one class and its subclass
(:class:`~resume.net.server.ResponderService`, the Python reference path, and
:class:`~resume.net.native_service.NativeResponderService`, the same service with the
per-datagram path in Rust), and the choice between them needs both, so it lives above
them.  ``ikeresume serve``, the demo, the tests and the benchmarks build their service here.

``[server] engine``: "native" (fails with a ConfigError when the native core cannot serve
the configuration), "python", or "auto" (the default): native whenever it can serve, else
python, with the reason logged.  ``$IKERESUME_CORE=python|native`` overrides "auto", as it
does for :func:`resume.native.make_responder`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from resume.net import logs
from resume.net.config import ConfigError, ServeConfig, responder_config
from resume.net.server import ResponderService
from resume.responder import ResponderConfig
from store.repository import Store

__all__ = ["make_service", "wants_native"]


def wants_native(
    config: ServeConfig,
    rcfg: ResponderConfig,
    clock: Callable[[], float] = time.time,
    engine: str | None = None,
) -> bool:
    """The engine ``engine`` (else ``[server] engine``) picks; ConfigError when "native" is
    asked for and cannot serve."""
    # lazy: the native engine's module (and the extension) only when it may be chosen
    from resume.net.native_service import native_engine_problem

    choice = engine or config.server.engine
    if choice not in ("auto", "native", "python"):
        raise ConfigError(f"[server] engine: {choice!r} is not one of auto, native, python")
    if choice == "auto":
        env = os.environ.get("IKERESUME_CORE", "").strip().lower()
        if env in ("native", "python"):
            choice = env
    if choice == "python":
        return False
    problem = native_engine_problem(config, rcfg, clock=clock)
    if choice == "native":
        if problem is not None:
            raise ConfigError(f"[server] engine = 'native': {problem}")
        return True
    if problem is not None:
        logs.event(logging.INFO, "engine_python", reason=problem)
        return False
    return True


def make_service(
    config: ServeConfig, store: Store, *, engine: str | None = None, **kw: Any
) -> ResponderService:
    """The responder service on the engine the configuration picks (see the module).

    ``kw`` are :class:`ResponderService`'s keyword arguments (installer, clock, ...);
    ``engine`` overrides ``[server] engine``.
    """
    rcfg = responder_config(config.protocol)
    if wants_native(config, rcfg, kw.get("clock", time.time), engine):
        # lazy: the native engine's module (and the extension) only when it is chosen
        from resume.net.native_service import NativeResponderService

        return NativeResponderService(config, store, **kw)
    return ResponderService(config, store, **kw)
