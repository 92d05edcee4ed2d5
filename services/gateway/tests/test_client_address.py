"""The client's address behind proxies (issue 6 item 7): trusted hops are counted from
the right of X-Forwarded-For; what the client wrote on the left never matters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.domain import client_address, trusted_proxy_hops

PEER = "10.0.0.7"  # the ingress controller's pod, as the gateway's socket sees it

junk = st.one_of(
    st.ip_addresses().map(str),
    st.text(alphabet=st.characters(exclude_characters=",\r\n"), max_size=30),
)


def test_no_hops_uses_the_socket_peer_whatever_the_header_says():
    assert client_address(PEER, ["203.0.113.9"], 0) == PEER
    assert client_address(PEER, [], 0) == PEER
    assert client_address(None, ["203.0.113.9"], 0) == "unknown"


def test_one_hop_takes_the_address_our_proxy_appended():
    # ingress-nginx writes the address it was connected from (it replaces the client's
    # header by default, or appends to it with compute-full-forwarded-for).
    assert client_address(PEER, ["203.0.113.9"], 1) == "203.0.113.9"
    assert client_address(PEER, ["1.1.1.1, 2.2.2.2, 203.0.113.9"], 1) == "203.0.113.9"


def test_two_hops_skip_the_outer_proxy_entry():
    # client -> cloud load balancer (appends the client) -> ingress (appends the LB)
    assert client_address(PEER, ["spoof, 198.51.100.4, 10.1.2.3"], 2) == "198.51.100.4"


def test_repeated_headers_read_as_one_list_in_order():
    assert client_address(PEER, ["6.6.6.6", "203.0.113.9"], 1) == "203.0.113.9"
    assert client_address(PEER, ["6.6.6.6, 198.51.100.4", "10.1.2.3"], 2) == "198.51.100.4"


@pytest.mark.parametrize(
    "headers",
    [[], [""], [" , "], ["203.0.113.9"]],
)
def test_fewer_entries_than_hops_falls_back_to_the_peer(headers):
    assert client_address(PEER, headers, 2) == PEER


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("203.0.113.9:51234", "203.0.113.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:DB8::1", "2001:db8::1"),
        (" 203.0.113.9 ", "203.0.113.9"),
        ("unknown", PEER),
        ("_hidden", PEER),
        ("999.1.1.1", PEER),
    ],
)
def test_entries_are_read_as_addresses(entry, expected):
    assert client_address(PEER, [f"1.1.1.1, {entry}"], 1) == expected


@given(
    spoofed=st.lists(junk, max_size=6),
    ours=st.lists(st.ip_addresses().map(str), min_size=1, max_size=4),
)
@settings(max_examples=200, deadline=None)
def test_spoofed_leftmost_entries_never_change_the_result(spoofed, ours):
    hops = len(ours)
    honest = client_address(PEER, [", ".join(ours)], hops)
    assert honest == str(ours[0]).lower() or honest == ours[0]
    forged = client_address(PEER, [", ".join([*spoofed, *ours])], hops)
    assert forged == honest
    # the same when the client's part arrives as a header of its own
    if spoofed:
        assert client_address(PEER, [", ".join(spoofed), ", ".join(ours)], hops) == honest


@pytest.mark.parametrize(("raw", "hops"), [(None, 0), ("", 0), ("0", 0), ("1", 1), (" 2 ", 2)])
def test_trusted_proxy_hops_setting(raw, hops):
    env = {} if raw is None else {"TRUSTED_PROXY_HOPS": raw}
    assert trusted_proxy_hops(env) == hops


@pytest.mark.parametrize("raw", ["-1", "one", "1.5", "17", "true"])
def test_trusted_proxy_hops_refuses_nonsense(raw):
    with pytest.raises(ValueError, match="TRUSTED_PROXY_HOPS"):
        trusted_proxy_hops({"TRUSTED_PROXY_HOPS": raw})
