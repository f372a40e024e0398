"""The pure parts of `turnout run --transparent`: addresses, names, and that teardown undoes setup."""

from __future__ import annotations

from pathlib import Path

from turnout.cli import transparent as t


def test_plan_takes_the_first_free_30_and_names_fit_the_kernel():
    p = t.plan(4_294_967, {"10.233.0.1", "10.233.0.6"})
    assert (p.host_ip, p.ns_ip, p.subnet) == ("10.233.0.9", "10.233.0.10", "10.233.0.8/30")
    assert len(p.host_if) <= 15 and len(p.ns_if) <= 15 and p.host_if != p.ns_if  # IFNAMSIZ
    assert p.netns.startswith(t.NETNS_PREFIX) and p.listen == "transparent@10.233.0.9:0"


def test_every_rule_set_up_is_deleted_in_teardown():
    p = t.plan(1, set())
    added = [c for c in t.setup_commands(p) if c[0] == "iptables"]
    added.append(["iptables", "-t", "nat", "-I", *t.redirect_rule(p, 8443)])
    deleted = [c for c in t.teardown_commands(p, 8443) if c[0] == "iptables"]
    as_deleted = sorted(tuple(a if a not in ("-A", "-I") else "-D" for a in c) for c in added)
    assert set(as_deleted) <= {tuple(c) for c in deleted}
    assert ["ip", "netns", "del", p.netns] in t.teardown_commands(p, None)


def test_the_command_runs_in_the_namespace_with_the_bundle_over_the_system_store():
    p = t.plan(1, set())
    cmd = t.exec_command(p, Path("/c/bundle.pem"), Path("/etc/ssl/certs/ca-certificates.crt"), ["curl", "-s", "x y"])
    assert cmd[:4] == ["ip", "netns", "exec", p.netns]
    assert cmd[-3:] == ["curl", "-s", "x y"]  # arguments passed through as they are, never re-split


def test_a_loopback_only_resolver_is_replaced_by_its_upstream(tmp_path):
    etc, upstream = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    upstream.write_text("nameserver 192.0.2.53\n")
    etc.write_text("# systemd-resolved\nnameserver 127.0.0.53\noptions edns0\n")
    assert t.namespace_resolv_conf(etc, upstream) == "nameserver 192.0.2.53\n"
    etc.write_text("nameserver 10.255.255.53\n")
    assert t.namespace_resolv_conf(etc, upstream) is None  # reachable from the namespace as it is
    etc.write_text("nameserver 127.0.0.53\n")
    assert t.namespace_resolv_conf(etc, tmp_path / "missing") is None
