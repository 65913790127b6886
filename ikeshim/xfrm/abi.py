"""The kernel ABI of XFRM netlink: constants and struct layouts from ``linux/xfrm.h``.

Written out field by field for x86-64 and every other 64-bit ABI we run on; ``tests/ikeshim``
checks the layouts against a real kernel in User-Mode Linux (add an object, dump it, compare).
"""

from __future__ import annotations

import struct

# --- constants (linux/xfrm.h) -------------------------------------------------------------

XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRM_MSG_GETSA = 0x12
XFRM_MSG_NEWPOLICY = 0x13
XFRM_MSG_DELPOLICY = 0x14
XFRM_MSG_GETPOLICY = 0x15
XFRM_MSG_ALLOCSPI = 0x16
XFRM_MSG_ACQUIRE = 0x17
XFRM_MSG_EXPIRE = 0x18
XFRM_MSG_UPDPOLICY = 0x19
XFRM_MSG_UPDSA = 0x1A
XFRM_MSG_POLEXPIRE = 0x1B
XFRM_MSG_FLUSHSA = 0x1C
XFRM_MSG_FLUSHPOLICY = 0x1D

XFRMA_ALG_AUTH = 1
XFRMA_ALG_CRYPT = 2
XFRMA_ALG_COMP = 3
XFRMA_ENCAP = 4
XFRMA_TMPL = 5
XFRMA_SA = 6
XFRMA_POLICY = 7
XFRMA_LTIME_VAL = 9
XFRMA_REPLAY_VAL = 10
XFRMA_SRCADDR = 13
XFRMA_LASTUSED = 15
XFRMA_POLICY_TYPE = 16
XFRMA_ALG_AEAD = 18
XFRMA_ALG_AUTH_TRUNC = 20
XFRMA_MARK = 21
XFRMA_REPLAY_ESN_VAL = 23
XFRMA_SA_EXTRA_FLAGS = 24
XFRMA_ADDRESS_FILTER = 26
XFRMA_PAD = 27
XFRMA_IF_ID = 31

XFRMNLGRP_ACQUIRE = 1
XFRMNLGRP_EXPIRE = 2
XFRMNLGRP_SA = 3
XFRMNLGRP_POLICY = 4

XFRM_MODE_TRANSPORT = 0
XFRM_MODE_TUNNEL = 1

XFRM_POLICY_IN = 0
XFRM_POLICY_OUT = 1
XFRM_POLICY_FWD = 2
XFRM_POLICY_ALLOW = 0
XFRM_POLICY_BLOCK = 1

XFRM_STATE_ESN = 128
XFRM_INF = 0xFFFFFFFFFFFFFFFF
UDP_ENCAP_ESPINUDP = 2
IPPROTO_ESP = 50
IPPROTO_AH = 51

# Kernel limit of the legacy 32-bit replay bitmap; larger windows need XFRMA_REPLAY_ESN_VAL.
LEGACY_REPLAY_MAX = 32

# --- struct layouts -------------------------------------------------------------------------

# xfrm_selector: daddr, saddr, dport, dport_mask, sport, sport_mask (network order, packed
# here as raw 2-byte fields), family, prefixlen_d, prefixlen_s, proto, pad, ifindex, user.
SELECTOR = struct.Struct("=16s16s2s2s2s2sHBBB3xiI")
LIFETIME_CFG = struct.Struct("=8Q")
LIFETIME_CUR = struct.Struct("=4Q")
XFRM_ID = struct.Struct("=16s4sB3x")
STATS = struct.Struct("=3I")
# xfrm_usersa_info: sel, id, saddr, lft, curlft, stats, seq, reqid, family, mode,
# replay_window, flags, pad to 224.
USERSA_INFO = struct.Struct("=56s24s16s64s32s12sIIHBBB7x")
USERSA_ID = struct.Struct("=16s4sHB1x")
# xfrm_userpolicy_info: sel, lft, curlft, priority, index, dir, action, flags, share, pad.
USERPOLICY_INFO = struct.Struct("=56s64s32sIIBBBB4x")
USERPOLICY_ID = struct.Struct("=56sIB3x")
# xfrm_user_tmpl: id, family, pad, saddr, reqid, mode, share, optional, pad, aalgos, ealgos,
# calgos.
USER_TMPL = struct.Struct("=24sH2x16sIBBBx3I")
ALGO = struct.Struct("=64sI")
ALGO_AUTH = struct.Struct("=64sII")
ALGO_AEAD = struct.Struct("=64sII")
ENCAP_TMPL = struct.Struct("=H2s2s2x16s")
REPLAY_ESN = struct.Struct("=6I")
REPLAY_LEGACY = struct.Struct("=3I")
MARK = struct.Struct("=II")
U32 = struct.Struct("=I")
# struct xfrm_address_filter: saddr, daddr, family, splen, dplen
ADDRESS_FILTER = struct.Struct("=16s16sHBB")
USER_EXPIRE = struct.Struct("=224sB7x")
USER_POLEXPIRE = struct.Struct("=168sB7x")

assert SELECTOR.size == 56 and USERSA_INFO.size == 224 and USERPOLICY_INFO.size == 168  # noqa: S101
assert USER_TMPL.size == 64 and ENCAP_TMPL.size == 24 and USERSA_ID.size == 24  # noqa: S101
assert USERPOLICY_ID.size == 64  # noqa: S101
