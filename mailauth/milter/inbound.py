"""The milter's inbound rules beyond verification: whose Authentication-Results and
Received-SPF fields are kept (RFC 8601 5 and 7.1), the real client of a message relayed by
one of our border hosts, the SPF result such a relay gives, OpenDMARC's ignore lists and
header checks (RFC 5322 3.6), and the authserv-id with the queue id. Pure functions of the
header fields and :class:`~mailauth.config_inbound.InboundOptions`; the server calls them.

The trust rules (docs/milter.md, "Multi-tier inbound"):

- A field with our own authserv-id is removed on every path.
- A field with a trusted authserv-id is kept only when the SMTP client is one of the
  relays (``inbound.relay.networks``); from any other client it is removed like our own:
  it claims to come from our ADMD but did not come through the hop that vouches for it.
- The real client of a relayed message is read from the border's Received field (its
  ``by`` host one of ``inbound.relay.received_by``), and only when the client is a relay:
  the border prepends its own field above whatever the sender wrote, so only the fields on
  top are read -- the border's, and above it those of hops between our own hosts (Postfix
  gives a milter the connecting client in every macro, XFORWARD or not: the field is where
  the border's client is).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mailauth.authresults import authserv_id_of, fold, quote_pvalue
from mailauth.config_inbound import InboundOptions, Network
from mailauth.domains import normalize_domain
from mailauth.errors import InvalidDomainError
from mailauth.message import Author, HeaderField, Message
from mailauth.results import SpfCheck, SpfOutcome, SpfResult

OURS, TRUSTED = "ours", "trusted"
_MAX_FIELD = 8192  # octets of a Received or Authentication-Results field read at most
_MAX_RECEIVED = 100  # Received fields looked at (RFC 5321 6.3: 100 hops is a loop)


def claimed_by(
    value: bytes, own: str, trusted: Sequence[str], receivers: bool = False
) -> str | None:
    """Whose field this is: ``OURS``, ``TRUSTED`` or None. An Authentication-Results
    value by its authserv-id, ignoring a ``/queue-id`` suffix (AuthservIDWithJobID); with
    ``receivers``, a Received-SPF value by the hosts it names as receiver."""
    names = _receivers(value) if receivers else {authserv_id_of(value) or ""}
    ids = {name.partition("/")[0] for name in names}
    if own in ids:
        return OURS
    return TRUSTED if not ids.isdisjoint(trusted) else None


_RECEIVER = re.compile(r"""receiver\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]+)""", re.IGNORECASE)
_COMMENT_HOST = re.compile(r"""^[^(]*\(\s*([^\s:()]+)\s*:""")


def _receivers(value: bytes) -> set[str]:
    """The hosts a Received-SPF field names as receiver: its ``receiver=`` pairs and the
    ``host:`` that starts its comment (RFC 7208 9.1 shows both), lowercased."""
    text = value[:_MAX_FIELD].decode("utf-8", "replace").replace("\r", "").replace("\n", "")
    found = {m.group(1).strip('"').replace("\\", "") for m in _RECEIVER.finditer(text)}
    comment = _COMMENT_HOST.match(text)
    if comment:
        found.add(comment.group(1))
    return {name.lower().rstrip(".") for name in found}


def is_in(address: str, networks: Sequence[Network]) -> bool:
    """Whether an address (as the CONNECT step gives it) is in one of the networks."""
    if not networks:
        return False  # (the usual case, once per connection and message: no parsing)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


_BY = re.compile(r"\sby\s+([^\s;()]+)", re.IGNORECASE)
_FROM = re.compile(r"^\s*from\s([^(]*)\(([^()]*)", re.IGNORECASE)
_LITERAL = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")
_ONLY_LITERAL = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]\Z")
_HELO_PAIR = re.compile(r"\bhelo=([^\s;()]+)", re.IGNORECASE)


def relayed_client(
    headers: Sequence[HeaderField],
    received_by: Sequence[str],
    relays: Sequence[Network] = (),
) -> tuple[str, str]:
    """(client address, HELO) from the border's Received field: the first one whose ``by``
    host is one of ``received_by``, reached through fields our own hosts wrote; ("", "")
    when there is none or it names no address. Reads ``from HELO (NAME [ADDR])`` (Postfix,
    Sendmail), ``from NAME ([ADDR] helo=HELO)`` and ``from [ADDR] (helo=HELO)`` (Exim).

    Only the fields on top, written by our hosts, are read: going down, a field whose client
    is one of ``relays`` (a hop from a border to an inner host: the receiving MTA's own, as
    Sendmail shows it to its milter; Postfix does not) or a loopback address (a content
    filter's re-injection on the border) is passed over, and the first field that is none
    of these ends the search. So a border that wrote no field under a configured name --
    its myhostname differs, another MTA -- gives ("", "") (verified for the relay, with a
    warning), never a field further down that the sender wrote naming the border.

    The address is the one in the first comment (before any ``helo=`` in it), never one
    elsewhere in the ``from`` clause: the HELO there is the sender's, and Postfix writes it
    as given -- an address literal, brackets, spaces (it joins HELO's words), even "by
    HOST" -- keeping out only parentheses, which it replaces. Exim's own form with no
    reverse name, ``from [ADDR] (helo=...)``, is the one case the literal comes first."""
    seen = 0
    for field in headers:
        if field.lname != "received":
            continue
        seen += 1
        if seen > _MAX_RECEIVED:
            break
        text = field.value[:_MAX_FIELD].decode("utf-8", "replace")
        text = text.replace("\r", "").replace("\n", " ").replace("\t", " ")
        client = _client_of(text)
        if client[0] and _inside(client[0], relays):
            continue  # (a hop between our hosts, or a filter's re-injection: further down)
        by = _BY.search(text)
        if by is None or by.group(1).lower().rstrip(".") not in received_by:
            return "", ""  # (neither ours nor the border's: what is below is not read)
        return client
    return "", ""


def _client_of(text: str) -> tuple[str, str]:
    """(address, HELO) of a Received field's ``from`` clause (unfolded), or ("", "")."""
    clause = _FROM.match(text)
    if clause is None:
        return "", ""
    given, comment = clause.group(1).strip(), clause.group(2)
    literal = _LITERAL.search(re.split("helo=", comment, maxsplit=1, flags=re.I)[0])
    if literal is None:
        literal = _ONLY_LITERAL.match(given)  # (Exim: no reverse name, the HELO inside)
    if literal is None:
        return "", ""
    try:
        address = str(ipaddress.ip_address(literal.group(1)))
    except ValueError:
        return "", ""
    pair = _HELO_PAIR.search(comment)
    helo = pair.group(1) if pair else given.split(" ")[0] if given else ""
    return address, "" if helo.startswith("[") else helo  # (an address literal: no name)


def _inside(address: str, relays: Sequence[Network]) -> bool:
    """Whether a Received field's client is one of our hops: a relay, or loopback."""
    return ipaddress.ip_address(address).is_loopback or is_in(address, relays)


_PAIR = re.compile(r"\s*=\s*")


_MAX_RESULTS = 4096  # characters of a relay's field read for its SPF result (real: < 2 KB)
# One token outside comments: a quoted string (to its end, or the text's), a "(" or ";", a
# run of anything else; inside a comment: a quoted pair, a parenthesis, a run of the rest.
_OUTSIDE = re.compile(r'"(?:[^"\\]|\\.)*"?|[(;]|[^"(;]+', re.S)
_INSIDE = re.compile(r"\\.|[()]|[^()\\]+|\\", re.S)


def _resinfos(text: str) -> list[str]:
    """An Authentication-Results value cut at the ``;`` outside quoted strings and
    comments (RFC 8601 2.2), comments (nested) removed: the authserv-id, then one part per
    result.

    Written here rather than asking authres, the parser used elsewhere: authres reads about
    20 ms per KB, 3-6 ms for a border's usual field, on the event loop for every relayed
    message; this reads what SPF needs in one linear pass, token by token (a field is cut
    at 4 KiB before)."""
    parts: list[str] = []
    current: list[str] = []
    pos, depth, size = 0, 0, len(text)
    while pos < size:
        token = (_INSIDE if depth else _OUTSIDE).match(text, pos)
        assert token is not None  # (each pattern matches any character)
        piece, pos = token.group(), token.end()
        if depth:
            depth += 1 if piece == "(" else -1 if piece == ")" else 0
        elif piece == "(":
            depth = 1
            current.append(" ")
        elif piece == ";":
            parts.append("".join(current))
            current = []
        else:
            current.append(piece)
    parts.append("".join(current))
    return parts


def upstream_spf(
    headers: Sequence[HeaderField], trusted: Sequence[str], mail_from: str
) -> SpfCheck | None:
    """The SPF result of the topmost Authentication-Results field with a trusted
    authserv-id (RFC 8601 7.1: the topmost, those the relay added), for MAIL FROM (and its
    HELO result, when it gives one); None when that field has no SPF result for MAIL FROM."""
    for field in headers:
        if field.lname != "authentication-results":
            continue
        if claimed_by(field.value, "", trusted) != TRUSTED:
            continue
        return _spf_of(field, mail_from)
    return None


def _spf_of(field: HeaderField, mail_from: str) -> SpfCheck | None:
    parts = _resinfos(field.text()[:_MAX_RESULTS])
    authserv_id = parts[0].split()[0] if parts[0].split() else ""
    found: dict[str, SpfOutcome] = {}
    for part in parts[1:]:
        tokens = _PAIR.sub("=", part).split()
        method, _, word = tokens[0].partition("=") if tokens else ("", "", "")
        if method.lower() != "spf":
            continue
        try:
            result = SpfResult(word.lower())
        except ValueError:
            continue
        for token in tokens[1:]:
            name, _, value = token.partition("=")
            name = name.lower()
            if name in ("smtp.mailfrom", "smtp.helo") and name not in found:
                identity = "mailfrom" if name == "smtp.mailfrom" else "helo"
                sender = value.replace('"', "")
                domain = sender.rpartition("@")[2]
                reason = f"from {authserv_id}"
                found[name] = SpfOutcome(result, identity, domain, sender, reason)
    mailfrom = found.get("smtp.mailfrom")
    if mailfrom is None:
        return None
    envelope = mail_from.strip("<> ").rpartition("@")[2].lower()
    if envelope and mailfrom.domain.lower() != envelope:
        return None  # (not this envelope's result)
    return SpfCheck(mailfrom, found.get("smtp.helo"))


@dataclass(frozen=True, slots=True)
class Findings:
    """What the inbound rules say of one message before it is verified."""

    refusal: str = ""  # the reply refusing it for its header section
    ignored: str = ""  # why no DMARC disposition is applied to it
    client: tuple[str, str] = ("", "")  # a relayed message's real client and HELO
    spf: SpfCheck | None = None  # a relay's SPF result (relay.spf = "upstream")
    warning: str = ""  # a relay's message whose real client could not be read


def inspect(
    options: InboundOptions, section: bytes, address: str, relay: bool, mail_from: str
) -> Findings:
    """The rules for an inbound message's header section (``name: value`` lines with
    CRLF), from ``address`` (a ``relay`` or not); raises ValueError on a section that is
    not a message (the server's caller turns it into "not verified")."""
    if not (relay or reads_header(options)):  # (the usual case: the section is parsed once,
        return Findings(ignored=ignored(options, address, mail_from, None))  # by the checks)
    parsed = Message.parse(section + b"\r\n")
    author = parsed.author()
    client, spf, warning = ("", ""), None, ""
    if relay and options.relay_received_by:
        client = relayed_client(parsed.headers, options.relay_received_by, options.relay_networks)
        if not client[0]:
            names = ",".join(options.relay_received_by)
            warning = f"no Received field by {names}: verified for the relay's address"
    if relay and options.relay_spf == "upstream":
        spf = upstream_spf(parsed.headers, options.trusted_authserv_ids, mail_from)
        if spf is None:
            where = "the Received field's client" if client[0] else "the relay's address"
            warning = f"no SPF result from a trusted relay's field: checked for {where}"
    reason = ignored(options, client[0] or address, mail_from, author)
    # (An ignored network's mail is not looked at, as OpenDMARC's IgnoreHosts: no refusal.)
    refusal = "" if reason == "network" else header_refusal(options, parsed.headers, author)
    return Findings(
        refusal=refusal,
        ignored=reason,
        client=client,
        spf=spf,
        warning=warning,
    )


def reads_header(options: InboundOptions) -> bool:
    """Whether these options look at the header section (else it is parsed once, later)."""
    return bool(
        options.required_headers
        or options.multiple_authors != "evaluate"
        or options.ignore_author_domains
    )


def ignored(options: InboundOptions, client: str, mail_from: str, author: Author | None) -> str:
    """Why DMARC is not applied to this message (OpenDMARC's ignore lists), or ""."""
    if is_in(client, options.ignore_networks):
        return "network"
    if author is not None and options.ignore_author_domains:
        domains = [_domain(d) for d in author.domains]
        if domains and all(d in options.ignore_author_domains for d in domains):
            return "author-domain"
    if options.ignore_mail_from_domains:  # (applies once SPF passes for it: server.py)
        domain = mail_from.strip("<> ").rpartition("@")[2]
        if domain and _domain(domain) in options.ignore_mail_from_domains:
            return "mail-from-domain"
    return ""


def _domain(name: str) -> str:
    try:
        return normalize_domain(name)
    except InvalidDomainError:
        return ""


# RFC 5322 3.6: how many of each field a message may have (From and Date exactly one).
_COUNTS = {
    "from": (1, 1), "date": (1, 1), "sender": (0, 1), "reply-to": (0, 1), "to": (0, 1),
    "cc": (0, 1), "bcc": (0, 1), "message-id": (0, 1), "in-reply-to": (0, 1),
    "references": (0, 1), "subject": (0, 1),
}  # fmt: skip


def header_refusal(options: InboundOptions, headers: Sequence[HeaderField], author: Author) -> str:
    """The reply text refusing a message for its header section, or "": RFC 5322 3.6's
    field counts and a From with a domain (``required_headers``), and a From with several
    authors (``multiple_authors``)."""
    if options.required_headers:
        counts = dict.fromkeys(_COUNTS, 0)
        for field in headers:
            if field.lname in counts:
                counts[field.lname] += 1
        for name, (low, high) in _COUNTS.items():
            if not low <= counts[name] <= high:
                many = "exactly one" if low else "at most one"
                title = "-".join(part.capitalize() for part in name.split("-"))
                return f"550 5.6.0 A message must have {many} {title} field (RFC 5322 3.6)"
        if author.error or not any(author.domains):
            return "550 5.6.0 The From field has no domain to authenticate (RFC 5322 3.6.2)"
    if options.multiple_authors == "reject" and len(author.mailboxes) > 1:
        return "550 5.7.1 A From field with several addresses is not accepted here"
    if options.multiple_authors == "reject-domains" and len(author.domains) > 1:
        return "550 5.7.1 A From field with addresses in several domains is not accepted here"
    return ""


def with_queue_id(field: str, authserv_id: str, queue_id: str) -> str:
    """An Authentication-Results field (``Authentication-Results: ID; ...``, folded) with
    ``ID/QUEUE-ID`` as its authserv-id, quoted as RFC 8601 2.2 requires (``/`` is not a
    token character), refolded."""
    unfolded = field.replace("\r\n", "")
    head = f"Authentication-Results: {authserv_id};"
    if not queue_id or not unfolded.startswith(head):
        return field
    safe = "".join(c for c in queue_id if c.isascii() and c.isalnum())[:64]
    if not safe:
        return field
    ours = quote_pvalue(f"{authserv_id}/{safe}")
    return fold(f"Authentication-Results: {ours};" + unfolded[len(head) :])
