"""`turnout run --transparent`: a command's HTTPS goes through turnout whether or not it reads a proxy setting.

The command runs in a network namespace of its own, joined to this one by a veth pair. In this namespace
iptables redirects the command's TCP connections to port 443 to mitmproxy's transparent mode listening
on the host end of the pair; mitmproxy reads each one's original destination (SO_ORIGINAL_DST) and its
SNI, so provider hosts are intercepted and the rest tunnelled to where they were going. Everything else
the command sends (DNS, other ports) is forwarded and masqueraded: it reaches the network as before.
In the command's own mount namespace the system CA bundle is turnout's bundle (a bind mount), so
clients that trust only the system store accept turnout's certificates; the usual CA variables are set
as well. It needs root (CAP_NET_ADMIN for the namespace and iptables, CAP_SYS_ADMIN for the mount).
mitmproxy's `local` mode would need no namespace, but it needs eBPF, which many kernels refuse.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import Failure

SUBNETS = ipaddress.ip_network("10.233.0.0/16")  # carved into /30s, one per run
FORWARD_SYSCTL = Path("/proc/sys/net/ipv4/ip_forward")
NETNS_PREFIX = "turnout-"
# $0 is the bundle, $1 the system bundle it covers, "$@" after shift 2 the command
MOUNT_AND_EXEC = 'mount --bind "$0" "$1" && shift 1 && exec "$@"'


@dataclass(frozen=True)
class Plan:
    """Names and addresses for one run's namespace."""

    netns: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    subnet: str

    @property
    def listen(self) -> str:
        """The mitmproxy mode for the transparent listener (port chosen by the kernel)."""
        return f"transparent@{self.host_ip}:0"


def plan(run_id: int, used: set[str]) -> Plan:
    """The first /30 of SUBNETS whose addresses no interface holds (`used`: the host's addresses)."""
    for net in SUBNETS.subnets(new_prefix=30):
        host, ns = (str(a) for a in net.hosts())
        if host not in used and ns not in used:
            tag = f"{run_id % 100000}{net.network_address.packed[2]:02x}{net.network_address.packed[3]:02x}"
            return Plan(f"{NETNS_PREFIX}{tag}", f"tnh{tag}"[:15], f"tnn{tag}"[:15], host, ns, str(net))
    raise Failure(f"turnout run --transparent: no free /30 left in {SUBNETS}")


def setup_commands(p: Plan) -> list[list[str]]:
    """The namespace, the pair, its addresses and routes, and forwarding for what is not port 443."""
    ns = ["ip", "netns", "exec", p.netns]
    return [
        ["ip", "netns", "add", p.netns],
        ["ip", "link", "add", p.host_if, "type", "veth", "peer", "name", p.ns_if],
        ["ip", "link", "set", p.ns_if, "netns", p.netns],
        ["ip", "addr", "add", f"{p.host_ip}/30", "dev", p.host_if],
        ["ip", "link", "set", p.host_if, "up"],
        [*ns, "ip", "addr", "add", f"{p.ns_ip}/30", "dev", p.ns_if],
        [*ns, "ip", "link", "set", p.ns_if, "up"],
        [*ns, "ip", "link", "set", "lo", "up"],
        [*ns, "ip", "route", "add", "default", "via", p.host_ip],
        *(_add(rule) for rule in forwarding_rules(p)),
    ]


Rule = tuple[list[str], bool, list[str]]  # (table, insert before the chain's own rules?, chain and match)


def redirect_rule(p: Plan, port: int) -> list[str]:
    """The nat PREROUTING rule sending the namespace's port-443 connections to the transparent listener."""
    return ["PREROUTING", "-i", p.host_if, "-p", "tcp", "--dport", "443", "-j", "REDIRECT", "--to-ports", str(port)]


def forwarding_rules(p: Plan) -> list[Rule]:
    """What lets the namespace's other traffic out (and its answers back in), as if it were not there."""
    return [
        (["-t", "nat"], False, ["POSTROUTING", "-s", p.subnet, "!", "-o", p.host_if, "-j", "MASQUERADE"]),
        ([], True, ["FORWARD", "-i", p.host_if, "-j", "ACCEPT"]),
        ([], True, ["FORWARD", "-o", p.host_if, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]),
    ]  # fmt: skip


def listener_rules(p: Plan, port: int) -> list[Rule]:
    """The redirect to the listener, and its way in even where INPUT's policy drops."""
    return [
        (["-t", "nat"], True, redirect_rule(p, port)),
        ([], True, ["INPUT", "-i", p.host_if, "-p", "tcp", "--dport", str(port), "-j", "ACCEPT"]),
    ]


def _add(rule: Rule) -> list[str]:
    table, first, spec = rule
    return ["iptables", *table, "-I" if first else "-A", *spec]


def teardown_commands(p: Plan, port: int | None) -> list[list[str]]:
    """Undo setup (and the redirect): each step on its own, so one that fails does not keep the rest."""
    rules = forwarding_rules(p) + (listener_rules(p, port) if port is not None else [])
    return [
        *(["iptables", *table, "-D", *spec] for table, _, spec in rules),
        ["ip", "link", "del", p.host_if],  # takes its peer with it
        ["ip", "netns", "del", p.netns],
    ]


def exec_command(p: Plan, bundle: Path, system_bundle: Path, command: list[str]) -> list[str]:
    """CMD in the namespace, in a mount namespace of its own (`ip netns exec` makes one) whose system CA
    bundle is turnout's."""
    return ["ip", "netns", "exec", p.netns, "sh", "-c", MOUNT_AND_EXEC, str(bundle), str(system_bundle), *command]


def nameservers(resolv_conf: str) -> list[str]:
    return [
        line.split()[1]
        for line in resolv_conf.splitlines()
        if line.split()[:1] == ["nameserver"] and len(line.split()) > 1
    ]


def namespace_resolv_conf(etc: Path = Path("/etc/resolv.conf"),
                          upstream: Path = Path("/run/systemd/resolve/resolv.conf")) -> str | None:  # fmt: skip
    """A resolv.conf for the namespace when the host's resolver listens on loopback only (systemd-resolved's
    127.0.0.53 is not reachable from another namespace): the resolver's own upstream servers. None: the
    host's file works as it is."""
    try:
        servers = nameservers(etc.read_text())
    except OSError:
        return None
    if not servers or not all(ipaddress.ip_address(s.split("%")[0]).is_loopback for s in servers):
        return None
    try:
        return upstream.read_text()
    except OSError:
        return None


def host_addresses() -> set[str]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3}


def check_can_run() -> None:
    """A clear error before anything is changed, rather than half a namespace."""
    missing = [tool for tool in ("ip", "iptables", "mount") if shutil.which(tool) is None]
    if missing:
        raise Failure(f"turnout run --transparent needs {', '.join(missing)} (e.g. apt-get install iproute2 iptables)")
    if os.geteuid() != 0:
        raise Failure(
            "turnout run --transparent needs root (CAP_NET_ADMIN for a network namespace and iptables, "
            "CAP_SYS_ADMIN to mount the CA bundle): run it with sudo, or use plain `turnout run`"
        )


class Namespace:
    """One run's namespace: `create()`, then `redirect(port)` once the listener is up, `close()` always."""

    def __init__(self, run_id: int | None = None) -> None:
        check_can_run()
        self.plan = plan(run_id if run_id is not None else os.getpid(), host_addresses())
        self.port: int | None = None
        self._forward_was: str | None = None
        self._etc = Path("/etc/netns") / self.plan.netns

    def create(self) -> None:
        try:
            resolver = namespace_resolv_conf()
            if resolver is not None:  # `ip netns exec` mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf
                self._etc.mkdir(parents=True, exist_ok=True)
                (self._etc / "resolv.conf").write_text(resolver)
            for cmd in setup_commands(self.plan):
                _run(cmd)
            was = FORWARD_SYSCTL.read_text().strip()
            if was != "1":
                FORWARD_SYSCTL.write_text("1\n")
                self._forward_was = was
        except BaseException:
            self.close()
            raise

    def redirect(self, port: int) -> None:
        self.port = port  # set first: close() undoes whichever of its rules went in
        for rule in listener_rules(self.plan, port):
            _run(_add(rule))

    def close(self) -> None:
        for cmd in teardown_commands(self.plan, self.port):
            subprocess.run(cmd, capture_output=True)  # a step that was never done fails here: fine
        shutil.rmtree(self._etc, ignore_errors=True)
        if self._forward_was is not None and not _other_runs(self.plan.netns):
            FORWARD_SYSCTL.write_text(self._forward_was + "\n")  # as it was, once no other run needs it

    def __enter__(self) -> "Namespace":
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _other_runs(mine: str) -> bool:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return any(
        line.split()[0].startswith(NETNS_PREFIX) and line.split()[0] != mine
        for line in out.splitlines()
        if line.split()
    )


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise Failure(f"turnout run --transparent: {' '.join(cmd)} failed: {done.stderr.strip() or done.returncode}")
