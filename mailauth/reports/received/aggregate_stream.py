"""The values of an aggregate report XML, collected straight from expat's callbacks.

A small state machine keyed by the path of the open elements (report_metadata,
date_range, policy_published, record, row, policy_evaluated, reason, identifiers,
auth_results, dkim, spf) collects the text of the elements :mod:`.aggregate_xml` reads,
and nothing else: no element tree is built, and the text of every other element is never
even handed to Python. Names are compared without their namespace (RFC 9990, RFC 7489 and
the drafts use the same local names).

What is read is what the element tree reading read: the first element of a name where one
is expected (the first ``<row>`` of a record, its first ``<source_ip>``, ...), every
``<reason>``, ``auth_results`` ``<dkim>`` and ``<spf>`` and metadata ``<error>`` up to 100;
an element's text is all the text inside it (that of elements nested in it too), white
space around it dropped, cut to ``max_text`` characters (:mod:`.limits`).

The caps against expat's costly cases are checked at each start tag: elements nested at
most 32 deep, at most 10,000 elements in one top-level element, at most ``max_records``
records and 100 other top-level elements. DTDs and entity declarations are refused by
defusedxml's handlers (:mod:`.aggregate_xml` installs them on the parser).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mailauth.reports.received.limits import ReadLimits, ReportReadError, clip

MAX_DEPTH = 32  # elements nested (a report has 6)
MAX_ELEMENTS = 10_000  # elements in one top-level element (a record has about 30)
MAX_OTHERS = 100  # top-level elements beside the records (metadata, policy, extensions)
MAX_LISTED = 100  # reasons, auth_results dkim and spf, metadata errors kept

# Contexts: where an open element is. IGNORE: one not read (and all inside it); a field (a
# text read: negative, -1 - its index in _FIELD_LIST) is read whole, elements inside it too.
(IGNORE, DOCUMENT, FEEDBACK, METADATA, DATES, POLICY, RECORD, ROW, EVALUATED, REASON,
 IDENTIFIERS, AUTH, AUTH_DKIM, AUTH_SPF) = range(14)  # fmt: skip
_CONTAINERS: dict[tuple[int, str], int] = {
    (DOCUMENT, "feedback"): FEEDBACK,
    (FEEDBACK, "report_metadata"): METADATA,
    (METADATA, "date_range"): DATES,
    (FEEDBACK, "policy_published"): POLICY,
    (FEEDBACK, "record"): RECORD,
    (RECORD, "row"): ROW,
    (ROW, "policy_evaluated"): EVALUATED,
    (EVALUATED, "reason"): REASON,
    (RECORD, "identifiers"): IDENTIFIERS,
    (RECORD, "auth_results"): AUTH,
    (AUTH, "dkim"): AUTH_DKIM,
    (AUTH, "spf"): AUTH_SPF,
}
_FIRST_ONLY = frozenset({METADATA, DATES, POLICY, ROW, EVALUATED, IDENTIFIERS, AUTH})
_IN_RECORD = frozenset({ROW, EVALUATED, IDENTIFIERS, AUTH})
_LISTED = frozenset({REASON, AUTH_DKIM, AUTH_SPF})
# Where a field's text goes: the metadata (and its date range), the policy, the record (its
# row, policy_evaluated and identifiers), the item being read (a reason, an auth_results dkim
# or spf), the metadata's errors (a list).
(_TO_METADATA, _TO_POLICY, _TO_RECORD, _TO_ITEM, _TO_ERRORS) = range(5)
_TARGETS = {METADATA: _TO_METADATA, DATES: _TO_METADATA, POLICY: _TO_POLICY, ROW: _TO_RECORD,
            EVALUATED: _TO_RECORD, IDENTIFIERS: _TO_RECORD, REASON: _TO_ITEM,
            AUTH_DKIM: _TO_ITEM, AUTH_SPF: _TO_ITEM}  # fmt: skip
_FIELDS: dict[int, dict[str, bool]] = {  # the texts read in each container (True: lower case)
    METADATA: dict.fromkeys(
        ("org_name", "email", "extra_contact_info", "report_id", "generator", "error"), False
    ),
    DATES: {"begin": False, "end": False},
    POLICY: dict.fromkeys(
        ("domain", "p", "sp", "np", "adkim", "aspf", "pct", "fo", "testing", "discovery_method"),
        True,
    ),
    ROW: {"source_ip": False, "count": False},
    EVALUATED: {"disposition": True, "dkim": True, "spf": True},
    REASON: {"type": True, "comment": False},
    IDENTIFIERS: {"header_from": True, "envelope_from": True, "envelope_to": True},
    AUTH_DKIM: {"domain": True, "selector": False, "result": True, "human_result": False},
    AUTH_SPF: {"domain": True, "scope": True, "result": True, "human_result": False},
}
_FIELD_LIST: list[tuple[int, str, bool]] = []  # (target, name, lower case)
_ACTIONS: list[dict[str, int]] = [{} for _ in range(AUTH_SPF + 1)]  # by parent: name -> context
for _parent, _names in _FIELDS.items():
    for _name, _lower in _names.items():
        _target = _TO_ERRORS if _name == "error" else _TARGETS[_parent]
        _FIELD_LIST.append((_target, _name, _lower))
        _ACTIONS[_parent][_name] = -len(_FIELD_LIST)
for (_parent, _name), _context in _CONTAINERS.items():
    _ACTIONS[_parent][_name] = _context
_FIELD_INFO = [(0, "", False), *_FIELD_LIST]  # (indexed by minus a field's context)
_BY_TAG: list[dict[str, int]] = [{} for _ in range(AUTH_SPF + 1)]  # by parent: expat's tag
_NAMES: dict[str, tuple[str, str]] = {}  # expat's "namespace}name" to (namespace, name)


def split_name(tag: str) -> tuple[str, str]:
    """(namespace, local name) of expat's ``tag`` (cached, up to a bound)."""
    found = _NAMES.get(tag)
    if found is None:
        namespace, _, name = tag.rpartition("}")
        found = (namespace, name)
        if len(_NAMES) < 1000:  # (names an attacker makes up do not fill the memory)
            _NAMES[tag] = found
    return found


class NotAReport(Exception):
    """The root element is not ``<feedback>``."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


Values = dict[str, str]
Record = tuple[Values, list[Values], list[Values], list[Values]]  # fields, reasons, dkim, spf


class Collector:
    """expat's handlers (:meth:`install`) and what they have collected: ``metadata``
    (with its ``begin`` and ``end``) and ``policy``, complete once ``have_metadata`` and
    ``have_policy`` say so; each record handed to ``on_record`` as it ends (with its
    number), ``on_metadata`` called once the metadata has ended. Texts are cut to
    ``max_text`` characters; the names of those cut are in ``clipped``."""

    __slots__ = (
        "_buffer", "_record", "_seen", "_stack", "_targets", "clipped", "depth", "elements",
        "errors", "have_metadata", "have_policy", "in_record", "limits", "metadata",
        "namespace", "on_metadata", "on_record", "policy", "records", "root", "top",
    )  # fmt: skip

    def __init__(self, limits: ReadLimits, on_record: Callable[[Record, int], None],
                 on_metadata: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.limits = limits
        self.on_record = on_record
        self.on_metadata = on_metadata
        self.namespace = ""
        self.root = False  # <feedback> has started
        self.depth = 0
        self.elements = 0  # in the current top-level element
        self.top = 0  # top-level elements
        self.in_record = False
        self.records = 0  # records ended
        self.metadata: Values = {}
        self.policy: Values = {}
        self.have_metadata = self.have_policy = False
        self.errors: list[str] = []
        self.clipped: set[str] = set()
        self._stack: list[int] = [DOCUMENT]
        self._seen: set[int] = set()  # first-only containers met (in the report, the record)
        self._buffer: list[str] = []  # text since the last field started (or record)
        self._record: Record = ({}, [], [], [])
        self._targets: list[Any] = [self.metadata, self.policy, {}, {}, self.errors]

    def install(self, parser: Any) -> None:
        """Make these the handlers of the pyexpat ``parser``."""
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._buffer.append
        parser.DefaultHandlerExpand = None  # (entities: expat's own error; DTDs: refused)
        parser.CommentHandler = None
        parser.ProcessingInstructionHandler = None

    def _start(self, tag: str, _attributes: object) -> None:
        depth = self.depth = self.depth + 1
        elements = self.elements = self.elements + 1
        if depth > MAX_DEPTH:
            raise ReportReadError(f"refused: XML nested more than {MAX_DEPTH} elements deep")
        if elements > MAX_ELEMENTS:
            raise ReportReadError(f"refused: more than {MAX_ELEMENTS:,} elements in one "
                                  "top-level element")  # fmt: skip
        stack = self._stack
        parent = stack[-1]
        if parent <= IGNORE:  # (inside an element not read, or inside a field)
            stack.append(IGNORE)
            return
        context = _BY_TAG[parent].get(tag)
        if context is None:
            context = _action(parent, tag)
        if depth <= 2:
            self._start_top(tag, context)
        if context < 0:
            target, name, _ = _FIELD_INFO[-context]
            if target == _TO_ERRORS:
                read = len(self.errors) < MAX_LISTED
            else:
                read = name not in self._targets[target]  # (the first of a name is read)
            if read:
                self._buffer.clear()
            else:
                context = IGNORE
        elif context in _FIRST_ONLY:
            if context in self._seen:
                context = IGNORE
            else:
                self._seen.add(context)
        elif context in _LISTED:
            if len(self._items(context)) >= MAX_LISTED:
                context = IGNORE
            else:
                self._targets[_TO_ITEM] = {}
        stack.append(context)

    def _start_top(self, tag: str, context: int) -> None:
        if self.depth == 1:
            if context != FEEDBACK:
                raise NotAReport(split_name(tag)[1])
            self.root, self.namespace = True, split_name(tag)[0]
            return
        self.elements = 1
        self.top += 1
        if self.top > self.limits.max_records + MAX_OTHERS:
            raise ReportReadError(f"refused: more than {self.limits.max_records:,} "
                                  "elements in <feedback>")  # fmt: skip
        self._buffer.clear()
        self.in_record = context == RECORD
        if self.in_record:
            self._seen.difference_update(_IN_RECORD)
            record: Record = ({}, [], [], [])
            self._record = record
            self._targets[_TO_RECORD] = record[0]

    def saw_row(self) -> bool:
        """Whether the record being ended (or read) has a ``<row>``."""
        return ROW in self._seen

    def _items(self, context: int) -> list[Values]:
        _, reasons, dkim, spf = self._record
        return reasons if context == REASON else dkim if context == AUTH_DKIM else spf

    def _end(self, _tag: str) -> None:
        context = self._stack.pop()
        self.depth -= 1
        if context < 0:
            self._end_field(context)
        elif context == IGNORE:  # (the common case: an element not read; nothing to end)
            pass
        elif context in _LISTED:
            self._items(context).append(self._targets[_TO_ITEM])
        elif context == RECORD:
            self.records += 1
            self.on_record(self._record, self.records)
        elif context == METADATA:
            self.have_metadata = True
            if self.on_metadata is not None:
                self.on_metadata()
        elif context == POLICY:
            self.have_policy = True
        if self.depth == 1:
            self.in_record = False

    def _end_field(self, context: int) -> None:
        target, name, lower = _FIELD_INFO[-context]
        text = "".join(self._buffer).strip()
        if target == _TO_ERRORS:  # (the metadata's errors: a list, cut without a note)
            self.errors.append(clip(text, self.limits.max_text))
            return
        if len(text) > self.limits.max_text:
            self.clipped.add(name)
            text = clip(text, self.limits.max_text)
        self._targets[target][name] = text.lower() if lower else text


def _action(parent: int, tag: str) -> int:
    """The context of the element ``tag`` in ``parent`` (cached, up to a bound)."""
    context = _ACTIONS[parent].get(split_name(tag)[1], IGNORE)
    if len(_BY_TAG[parent]) < 1000:  # (names an attacker makes up do not fill the memory)
        _BY_TAG[parent][tag] = context
    return context
