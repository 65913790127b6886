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
