"""Random DNS worlds for the SPF differential test: records with nested includes, redirects,
macros, void lookups, MX and PTR lists, DNS faults, IPv4 and IPv6 clients.

A world is plain data (:class:`World`) turned into a :class:`ZoneResolver`, so that the
differential test can change it (the repairs of tests/test_spf_differential.py) and build
it again. Names live under ``.test``; the names that only ever appear as PTR targets are
kept apart (``PTR_NAMES``), so that a fault there affects nothing but PTR validation.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field, replace

from mailauth.dns import MxRecord, Record, RRType, ZoneResolver

DOMAINS = [f"d{i}.test" for i in range(6)]
HOSTS = [f"h{i}.test" for i in range(5)]
PTR_NAMES = ["p0.ptr.test", "p1.ptr.test", "mail.d0.test", "mail.d1.test", "mx.d2.test"]
CLIENTS = ["192.0.2.10", "192.0.2.77", "2001:db8::10", "::ffff:192.0.2.10", "2001:db8:1::5"]
ADDRESSES4 = ["192.0.2.10", "192.0.2.99", "198.51.100.1", "203.0.113.7"]
ADDRESSES6 = ["2001:db8::10", "2001:db8::ff", "2001:db8:1::5", "2001:db8:2::1"]
LOCALS = ["u", "first.last", "a-b+c", "strong-bad", "x_y"]
MACRO_NAMES = [
    "%{l}.u.test", "%{i}.ip.test", "%{ir}.%{v}.arpa.test", "%{d2}.x.test", "%{o}.o.test",
    "%{h}.helo.test", "%{l1r-}.%{d}", "%{L}.u.test", "%{s}.s.test", "%{p}.p.test",
    "%{ir}.%{v}._spf.%{d2}", "%{lr.}.u.test", "%{d1r}.r.test", "%{p2}.p.test",
]  # fmt: skip
UNKNOWN_MODIFIERS = ["foo=bar", "foo=%{d}", "x-y.z=%{l}", "op=%{i}", "FOO=bar", "default=-"]
EXPLANATIONS = [
    "%{i} is not allowed for %{d}", "see %{l}@%{o} from %{c} at %{h}", "plain text",
    "100% wrong", "%{ir}.%{v} via %{r}", "%{S} %{L}", "%{d2r}: %{C}",
]  # fmt: skip


@dataclass
class World:
    """One case: DNS data and the SMTP facts."""

    records: dict[tuple[str, RRType], list[Record]] = field(default_factory=dict)
    faults: dict[str, str] = field(default_factory=dict)
    ip: str = "192.0.2.10"
    sender: str = "u@d0.test"
    helo: str = "h0.test"

    def resolver(self) -> ZoneResolver:
        return ZoneResolver(
            {key: (300, tuple(values)) for key, values in self.records.items()},
            faults=self.faults,
        )

    def copy(self) -> World:
        records = {key: list(values) for key, values in self.records.items()}
        return replace(self, records=records, faults=dict(self.faults))

    def spf_texts(self) -> dict[str, list[bytes]]:
        return {
            name: [r for r in values if isinstance(r, bytes) and r.lower().startswith(b"v=spf1")]
            for (name, rdtype), values in self.records.items()
            if rdtype is RRType.TXT
        }

    def client(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        address = ipaddress.ip_address(self.ip)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped
        return address


def make_world(rng: random.Random) -> World:
    world = World(
        ip=rng.choice(CLIENTS),
        sender=_sender(rng),
        helo=rng.choice([*DOMAINS[:3], "h0.test", "[192.0.2.10]"]),
    )
    for domain in DOMAINS:
        if rng.random() < 0.85:
            texts: list[Record] = [_record(rng, domain).encode()]
            if rng.random() < 0.04:
                texts.append(_record(rng, domain).encode())  # two records: permerror
            if rng.random() < 0.2:
                texts.append(b"google-site-verification=abc")
            world.records[(domain, RRType.TXT)] = list(texts)
        if rng.random() < 0.6:
            world.records[(domain, RRType.MX)] = _exchanges(rng)
        _addresses(rng, world, domain, 0.4)
    for host in HOSTS:
        _addresses(rng, world, host, 0.8)
        if rng.random() < 0.08:
            world.faults[host] = rng.choice(["timeout", "servfail"])
    _ptr(rng, world)
    for index in range(3):
        if rng.random() < 0.7:
            texts = [rng.choice(EXPLANATIONS).encode()]
            if rng.random() < 0.1:
                texts.append(b"second")
            world.records[(f"e{index}.test", RRType.TXT)] = texts
    if rng.random() < 0.1:
        world.faults[rng.choice(DOMAINS)] = "timeout"
    if rng.random() < 0.05:
        world.faults["e0.test"] = "servfail"
    return world


def populate_asked_names(rng: random.Random, world: World, asked: list[tuple[str, RRType]]) -> None:
    """Give some names a first evaluation asked (expanded macros, mostly) an A record, so
    that exists: and the like match sometimes."""
    for name, rdtype in asked:
        known = (name, rdtype) in world.records or name in PTR_NAMES or name in world.faults
        if rdtype is RRType.A and not known and rng.random() < 0.4:
            world.records[(name, RRType.A)] = ["127.0.0.2"]


def _sender(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.1:
        return ""  # null: postmaster@HELO
    domain = rng.choice(DOMAINS[:4])
    if roll < 0.18:
        return domain  # no local-part
    return f"{rng.choice(LOCALS)}@{domain}"


def _record(rng: random.Random, domain: str) -> str:
    terms = [_term(rng, domain) for _ in range(rng.choice([0, 1, 2, 3, 3, 4, 5, 6, 8, 11]))]
    if rng.random() < 0.5:
        terms.append(rng.choice(["-all", "~all", "?all", "all", "-all", "-all"]))
    if rng.random() < 0.3:
        terms.insert(rng.randrange(len(terms) + 1), f"redirect={_target(rng, domain)}")
    if rng.random() < 0.3:
        exp = rng.choice(["e0.test", "e1.test", "e2.test", "%{l}.e1.test", "nx.test"])
        terms.append(f"exp={exp}")
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        terms.insert(rng.randrange(len(terms) + 1), rng.choice(UNKNOWN_MODIFIERS))
    if rng.random() < 0.05:
        terms.insert(rng.randrange(len(terms) + 1), "REDIRECT=" + _target(rng, domain))
    if rng.random() < 0.03:
        terms.append(rng.choice(["moo", "a/33", "ip4:192.0.2", "foo=%x", "exists", "all:x"]))
    return " ".join(["v=spf1", *terms])


def _target(rng: random.Random, domain: str) -> str:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(["%{d2}", domain])  # itself
    if roll < 0.1:
        return "nx.test"
    return rng.choice([d for d in DOMAINS if d != domain])


def _term(rng: random.Random, domain: str) -> str:
    qualifier = rng.choice(["", "", "", "+", "-", "~", "?"])
    kind = rng.choices(
        ["ip4", "ip6", "a", "mx", "ptr", "exists", "include"], [14, 8, 16, 12, 6, 10, 14]
    )[0]
    if kind == "ip4":
        net = rng.choice(["192.0.2.0/24", "192.0.2.10", "198.51.100.0/24", "0.0.0.0/0"])
        return f"{qualifier}ip4:{net}"
    if kind == "ip6":
        net = rng.choice(["2001:db8::/32", "2001:db8::10", "2001:db8:1::/48", "::/0"])
        return f"{qualifier}ip6:{net}"
    if kind in ("a", "mx"):
        target = rng.choice(["", "", f":{rng.choice(HOSTS)}", f":{rng.choice(DOMAINS)}", ":%{d}"])
        cidr = rng.choice(["", "", "", "/24", "//64", "/16//48", "/32//128", "/0"])
        return f"{qualifier}{kind}{target}{cidr}"
    if kind == "ptr":
        target = rng.choice(["", "", ":ptr.test", ":d0.test", ":test", ":%{d}", ":d1.test"])
        return f"{qualifier}ptr{target}"
    if kind == "exists":
        return f"{qualifier}exists:{rng.choice([*MACRO_NAMES, *HOSTS])}"
    return f"{qualifier}include:{_target(rng, domain)}"


def _exchanges(rng: random.Random) -> list[Record]:
    count = rng.choice([0, 1, 1, 2, 3, 5, 10, 11])
    names = [*HOSTS, "nx.test", ""]
    return [MxRecord(rng.randrange(50), rng.choice(names)) for _ in range(count)]


def _addresses(rng: random.Random, world: World, name: str, chance: float) -> None:
    if rng.random() < chance:
        world.records[(name, RRType.A)] = rng.sample(ADDRESSES4, rng.randint(1, 2))
    if rng.random() < chance * 0.7:
        world.records[(name, RRType.AAAA)] = rng.sample(ADDRESSES6, rng.randint(1, 2))


def _ptr(rng: random.Random, world: World) -> None:
    reverse = world.client().reverse_pointer
    roll = rng.random()
    if roll < 0.15:
        return  # no PTR records: NXDOMAIN
    if roll < 0.22:
        world.faults[reverse] = rng.choice(["timeout", "servfail"])
        return
    count = rng.choice([1, 1, 2, 3, 4, 11, 12])
    world.records[(reverse, RRType.PTR)] = [rng.choice(PTR_NAMES) for _ in range(count)]
    client = str(world.client())
    family = RRType.A if world.client().version == 4 else RRType.AAAA
    pool = ADDRESSES4 if family is RRType.A else ADDRESSES6
    for name in PTR_NAMES:
        roll = rng.random()
        if roll < 0.45:
            world.records[(name, family)] = [client]  # validates
        elif roll < 0.7:
            world.records[(name, family)] = [rng.choice([a for a in pool if a != client])]
        elif roll < 0.85:
            world.faults[name] = rng.choice(["timeout", "servfail"])
        # else: no address records (a void lookup)
