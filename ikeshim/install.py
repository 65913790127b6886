"""The installer entry point the resumption service and client call (``[install] mode=xfrm``).

``resume.net.hooks.XfrmInstaller`` looks for an async ``install_sa_pair(sa)`` here.  Each call
is all-or-nothing (see :mod:`ikeshim.installer`), takes over the policies of the previous
session between the same selectors, and removes that session's SAs once the new ones are in.
"""

from __future__ import annotations

from ikeshim.installer import (
    InstalledSA,
    InstallOptions,
    install_sa_pair_async,
    remove_sa_pair_async,
)
from resume.sa import SAPair

__all__ = ["InstallOptions", "InstalledSA", "install_sa_pair", "remove_sa_pair"]


async def install_sa_pair(
    sa: SAPair,
    options: InstallOptions | None = None,
    *,
    replace_old: InstalledSA | None = None,
) -> InstalledSA:
    """Install ``sa`` (inbound + outbound SA and policies, as ``sa.role`` sees them)."""
    return await install_sa_pair_async(sa, options or InstallOptions(), replace_old=replace_old)


async def remove_sa_pair(installed: InstalledSA) -> None:
    await remove_sa_pair_async(installed)
