"""Typed failures of the credential store.

Every failure the store can meet at run time -- an unreachable or failing database, a row
that does not decode or authenticate, a master key that does not match what wrapped the
data -- surfaces as one :class:`StoreError` subclass with a message an operator can act
on.  The application's rule is simple because of that: any ``StoreError`` while answering
the protocol core means "refuse" (NACK, the peer runs a full IKE), never "guess".  The
store never deletes anything because it could not read it.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class: the store could not give a trustworthy answer; refuse the resumption."""


class StoreUnavailable(StoreError):
    """The database is unreachable, locked beyond the busy timeout, or failing."""


class CorruptRecord(StoreError):
    """A row does not decode, or its wrapped secret does not authenticate (tampered/moved)."""


class MasterKeyError(StoreError):
    """The master key is missing, malformed, or not the one that wrapped the stored secrets."""


class StoreConfigError(StoreError):
    """The store was configured with something it cannot use (bad URL, bad option)."""


class InputError(StoreConfigError):
    """Local input given to the store -- an SA description for ``cache bootstrap``, an export
    file for ``cache import`` -- does not parse or validate.

    The one error type of those readers: whatever is wrong (not UTF-8, not JSON, a missing
    field, a wrong type, a number out of range, a secret that does not authenticate) is
    reported as this, naming the ``source`` (file name, ``-`` for stdin), the ``line``
    (1-based, when the input has lines) and the ``field`` (a dotted path such as
    ``i_to_r.encr_key``).  Nothing was written when it is raised.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        self.field = field
        where = " ".join(
            x for x in (source, None if line is None else f"line {line}") if x is not None
        )
        text = f"{field}: {reason}" if field else reason
        super().__init__(f"{where}: {text}" if where else text)


class SADescriptionError(InputError):
    """A JSON SA description (``specs/sa-description.md``) is unusable."""


class ExportFormatError(InputError):
    """An export file (``specs/cache-format.md``) is unusable; nothing was imported."""
