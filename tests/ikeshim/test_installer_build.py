"""Installer construction (no kernel): directions, selectors, algorithms, lifetimes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikeshim.algorithms import crypto_from_state, kernel_algos
from ikeshim.errors import HarvestError
from ikeshim.installer import (
    InstallOptions,
    _port_blocks,
    build_policies,
    build_states,
    derive_reqid,
)
from ikeshim.xfrm import XFRM_POLICY_FWD, XFRM_POLICY_IN, XFRM_POLICY_OUT, Algo, XfrmState
from resume.sa import Lifetimes, Mode, TrafficSelector
from tests.ikeshim.pairs import SUITES, make_pair, make_params, mirror


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_algorithms_map_both_ways(suite: str) -> None:
    params = make_params(suite)
    pair = make_pair(params)
    inbound, outbound = build_states(pair)
    for sa, keys in ((inbound, pair.inbound), (outbound, pair.outbound)):
        back = crypto_from_state(sa)
        assert (back.encr, back.encr_key_bits, back.integ) == SUITES[suite]
        assert back.keys == keys


def test_truncation_lengths_follow_rfc4868() -> None:
    for suite, trunc in (("cbc-sha256", 128), ("cbc-sha384", 192), ("cbc-sha512", 256)):
        params = make_params(suite)
        algos = kernel_algos(params, make_pair(params).i_to_r)
        assert algos.auth is not None and algos.auth.extra_bits == trunc


def test_unknown_kernel_algorithm_is_refused_for_harvest() -> None:
    sa = XfrmState("10.0.0.1", "10.0.0.2", 1, aead=Algo("rfc4309(ccm(aes))", b"k" * 19, 128))
    with pytest.raises(HarvestError):
        crypto_from_state(sa)


def test_directions_swap_between_peers() -> None:
    pair = make_pair(make_params("gcm128", natt=(4500, 4501)))
    i_in, i_out = build_states(pair)
    r_in, r_out = build_states(mirror(pair))
    assert i_out == r_in and i_in == r_out
    assert i_out.src == "192.0.2.1" and i_out.spi == pair.i_to_r.spi
    assert i_out.encap is not None and (i_out.encap.sport, i_out.encap.dport) == (4500, 4501)


def test_lifetimes_map_to_kernel_limits() -> None:
    pair = make_pair(make_params(), lifetimes=Lifetimes(90, 100, 900, 1000, None, 5))
    lt = build_states(pair)[0].lifetime
    assert (lt.soft_add_seconds, lt.hard_add_seconds) == (90, 100)
    assert (lt.soft_bytes, lt.hard_bytes, lt.hard_packets) == (900, 1000, 5)
    assert lt.soft_use_seconds is None and lt.soft_packets is None


def test_tunnel_policies_cover_every_selector_pair_with_fwd() -> None:
    params = make_params(
        "gcm128",
        mode=Mode.TUNNEL,
        tsi=(TrafficSelector.from_network("10.1.0.0/24"),),
        tsr=(TrafficSelector("10.2.0.0", "10.2.0.5"),),  # not a prefix: 10.2.0.0/30 + /31
    )
    pols = build_policies(make_pair(params))
    dirs = sorted(p.dir for p in pols)
    assert dirs == sorted([XFRM_POLICY_OUT] * 2 + [XFRM_POLICY_IN] * 2 + [XFRM_POLICY_FWD] * 2)
    out = [p for p in pols if p.dir == XFRM_POLICY_OUT]
    assert {(p.selector.daddr, p.selector.prefixlen_d) for p in out} == {
        ("10.2.0.0", 30),
        ("10.2.0.4", 31),
    }
    assert all(p.templates[0].dst == "192.0.2.2" for p in out)
    assert build_policies(make_pair(params), InstallOptions(fwd=False)) != pols


def test_reqid_is_shared_by_both_peers() -> None:
    pair = make_pair(make_params())
    assert derive_reqid(pair) == derive_reqid(mirror(pair))
    assert derive_reqid(pair) & 0x40000000


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_port_blocks_cover_exactly_the_range(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    covered: set[int] = set()
    blocks = _port_blocks(lo, hi)
    for port, mask in blocks:
        size = (~mask & 0xFFFF) + 1
        assert port & ~mask & 0xFFFF == 0
        covered |= set(range(port, port + size))
    assert covered == set(range(lo, hi + 1))
    assert len(blocks) <= 32
