"""What happens to a fresh SA pair once a resumption completes: install it, or hand it off.

Why an interface: the service must not care whether the kernel (``ikeshim``'s XFRM
installer), an operator's script, or nothing installs the SAs, and the XFRM installer is
optional (it needs root and a kernel with ESP).  Each :class:`Installer` gets the
:class:`~resume.sa.SAPair`; failures raise :class:`InstallError` and are counted, never
crash the service.  The description given to hooks contains keys by design; it goes over a
pipe to the child's stdin, never on a command line or in a log.

An installer must be idempotent: the service commits each SA pair into its install outbox
with the ratchet and, after a crash between the commit and the end of the install, installs
it again at start-up (spec 6.2.1).  A pair that is already installed (same SPIs and keys)
must count as installed -- the XFRM installer does so; a hook is simply called again.
"""

from __future__ import annotations

import importlib
import inspect
import json
import shlex
from collections.abc import Callable
from typing import Any, Protocol

import trio

from ikeshim.install import install_sa_pair
from resume.sa import SAPair


class InstallError(Exception):
    """An installer or hook failed (non-zero exit, timeout, exception, kernel refusal)."""


class Installer(Protocol):
    async def install(self, sa: SAPair) -> None: ...


class NoInstaller:
    """``mode = "none"``: the daemon or another tool installs the SAs."""

    async def install(self, sa: SAPair) -> None:
        return None


class ExecHook:
    """Run an executable with ``SAPair.describe()`` as JSON on stdin; exit 0 means success."""

    def __init__(self, argv: list[str], timeout: float) -> None:
        if not argv:
            raise ValueError("empty hook command")
        self.argv = argv
        self.timeout = timeout

    async def install(self, sa: SAPair) -> None:
        data = json.dumps(sa.describe()).encode()
        try:
            with trio.fail_after(self.timeout):
                proc = await trio.run_process(
                    self.argv, stdin=data, capture_stdout=True, capture_stderr=True, check=False
                )
        except trio.TooSlowError:
            raise InstallError(f"hook {self.argv[0]} timed out after {self.timeout:g}s") from None
        except OSError as e:
            raise InstallError(f"hook {self.argv[0]} could not run: {e.strerror or e}") from None
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip()[-200:]
            raise InstallError(f"hook {self.argv[0]} exited {proc.returncode}: {tail}")


class PythonHook:
    """Call ``module:function(description_dict)``; it may be a coroutine function."""

    def __init__(self, func: Callable[[dict[str, Any]], Any], timeout: float) -> None:
        self.func = func
        self.timeout = timeout

    @classmethod
    def from_spec(cls, spec: str, timeout: float) -> PythonHook:
        mod_name, _, attr = spec.partition(":")
        if not mod_name or not attr:
            raise ValueError(f"python hook must be 'package.module:function', got {spec!r}")
        try:
            obj: Any = importlib.import_module(mod_name)
        except ImportError as e:
            raise ValueError(f"cannot import hook module {mod_name!r}: {e}") from None
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise ValueError(f"{mod_name!r} has no attribute {attr!r}")
        if not callable(obj):
            raise ValueError(f"hook {spec!r} is not callable")
        return cls(obj, timeout)

    async def install(self, sa: SAPair) -> None:
        try:
            with trio.fail_after(self.timeout):
                result = self.func(sa.describe())
                if inspect.isawaitable(result):
                    await result
        except trio.TooSlowError:
            raise InstallError(f"python hook timed out after {self.timeout:g}s") from None
        except InstallError:
            raise
        except Exception as e:
            raise InstallError(f"python hook raised {type(e).__name__}: {e}") from None


class XfrmInstaller:
    """Adapter to ikeshim's service entry point :func:`ikeshim.install.install_sa_pair`.

    ikeshim owns the kernel side (all-or-nothing install of both SAs and their policies, on
    a socket kept open per thread); this only bounds it in time and maps its errors.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def install(self, sa: SAPair) -> None:
        try:
            with trio.fail_after(self.timeout):
                await install_sa_pair(sa)
        except trio.TooSlowError:
            raise InstallError(f"XFRM install timed out after {self.timeout:g}s") from None
        except Exception as e:  # ikeshim.errors.XfrmError and friends: counted, not fatal
            raise InstallError(f"XFRM install failed: {e}") from None


def make_installer(mode: str, hook: str, timeout: float) -> Installer:
    """Build the installer named by the ``[install]`` section (ValueError when unusable)."""
    if mode == "none":
        return NoInstaller()
    if mode == "xfrm":
        return XfrmInstaller(timeout)
    if mode == "hook":
        if hook.startswith("python:"):
            return PythonHook.from_spec(hook[len("python:") :], timeout)
        return ExecHook(shlex.split(hook), timeout)
    raise ValueError(f"unknown install mode {mode!r}")
