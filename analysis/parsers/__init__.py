"""Streaming parsers for VPN session logs, one module per log family (see ``detect``)."""
