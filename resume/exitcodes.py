"""Exit codes shared by every ``ikeresume`` subcommand (documented in the README).

Why a module of its own, at the bottom of the layers: each package's ``cli`` module returns
these codes, and none of them may import the top-level dispatcher (:mod:`resume.cli`) that
imports them.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FALLBACK = 3  # resumption refused or timed out: caller must run a full IKE
EXIT_CONFIG = 4
