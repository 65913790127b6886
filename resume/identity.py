"""IKE identities in credential form, and the one readable text form for them.

A credential stores each identity in *credential form* (``specs/protocol.md`` section 2): the
one-byte IKEv2 ID Type (RFC 7296 3.5) followed by the identification data, without the
payload's three reserved bytes.  Both peers must derive the same bytes, so every place
that reads an identity as text (``ikeresume resume --peer``, the JSON SA description of
``ikeresume cache bootstrap``) and every place that prints one (``ikeresume cache list``)
goes through this module::

    ipv4:192.0.2.1   ipv6:2001:db8::1   fqdn:vpn.example.org   email:carol@example.org
    keyid:0a0b0c     hex:02766f6e       (hex: the whole credential form, type byte first)

``rfc822:`` is accepted as a synonym of ``email:``.  :func:`format_identity` prints the
form that :func:`parse_identity` reads back to the same bytes.
"""

from __future__ import annotations

import ipaddress

ID_IPV4_ADDR = 1
ID_FQDN = 2
ID_RFC822_ADDR = 3
ID_IPV6_ADDR = 5
ID_KEY_ID = 11

#: text prefix -> ID Type
ID_TYPES = {
    "ipv4": ID_IPV4_ADDR,
    "fqdn": ID_FQDN,
    "email": ID_RFC822_ADDR,
    "rfc822": ID_RFC822_ADDR,
    "ipv6": ID_IPV6_ADDR,
    "keyid": ID_KEY_ID,
}
_PREFIX = {ID_IPV4_ADDR: "ipv4", ID_FQDN: "fqdn", ID_RFC822_ADDR: "email", ID_IPV6_ADDR: "ipv6",
           ID_KEY_ID: "keyid"}  # fmt: skip
#: an identity enters key derivations behind a 2-byte length
MAX_IDENTITY_LEN = 0xFFFF


def parse_identity(text: str, *, bare: bool = False) -> bytes:
    """``TYPE:VALUE`` (see the module docstring) -> credential form; ValueError if not.

    ``bare``: also accept a value without a prefix (an IP address, else ``email`` if it
    contains ``@``, else ``fqdn``), as ``ikeresume resume --peer`` does for convenience.
    Files read by other programs require the prefix: a guess there could make two peers
    derive different bytes.
    """
    kind, sep, value = text.partition(":")
    kind = kind.lower()
    if sep and kind == "hex":
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"identity {text!r}: hex: takes hex digits") from None
        if len(raw) < 2:
            raise ValueError(f"identity {text!r}: hex: needs a type byte and data")
        return _checked(raw, text)
    if sep and kind in ID_TYPES:
        t = ID_TYPES[kind]
        if not value:
            raise ValueError(f"identity {text!r} has no value after {kind}:")
        if t in (ID_IPV4_ADDR, ID_IPV6_ADDR):
            try:
                ip = ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"identity {text!r}: {value!r} is not an IP address") from None
            if (t == ID_IPV4_ADDR) != (ip.version == 4):
                raise ValueError(f"identity {text!r}: {value!r} is not an {kind} address")
            return bytes([t]) + ip.packed
        if t == ID_KEY_ID:
            try:
                return _checked(bytes([t]) + bytes.fromhex(value), text)
            except ValueError as e:
                if "too long" in str(e):
                    raise
                raise ValueError(f"identity {text!r}: keyid: takes hex digits") from None
        return _checked(bytes([t]) + value.encode(), text)
    if not bare:
        known = ", ".join(sorted({*ID_TYPES, "hex"}))
        raise ValueError(f"identity {text!r} needs a type prefix ({known})")
    if not text:
        raise ValueError("empty identity")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return _checked(bytes([ID_RFC822_ADDR if "@" in text else ID_FQDN]) + text.encode(), text)
    return bytes([ID_IPV4_ADDR if ip.version == 4 else ID_IPV6_ADDR]) + ip.packed


def _checked(raw: bytes, text: str) -> bytes:
    if len(raw) > MAX_IDENTITY_LEN:
        raise ValueError(f"identity {text[:40]!r}...: too long ({len(raw)} bytes)")
    return raw


def format_identity(ident: bytes) -> str:
    """Credential form -> the text :func:`parse_identity` reads back to the same bytes."""
    if len(ident) >= 2:
        t, data = ident[0], ident[1:]
        kind = _PREFIX.get(t)
        if (t == ID_IPV4_ADDR and len(data) == 4) or (t == ID_IPV6_ADDR and len(data) == 16):
            return f"{kind}:{ipaddress.ip_address(data)}"
        if t == ID_KEY_ID:
            return f"keyid:{data.hex()}"
        if t in (ID_FQDN, ID_RFC822_ADDR):
            try:
                s = data.decode("utf-8")
            except UnicodeDecodeError:
                s = ""
            if s and s.isprintable():
                return f"{kind}:{s}"
    return "hex:" + ident.hex()
