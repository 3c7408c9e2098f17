"""A duplicate aggregate report is told from its metadata: its key is looked up as soon as
``<report_metadata>`` has been read, and its records are never read (a duplicate whose
records are broken is still a duplicate, not an error; the records' reader is never
called), on SQLite and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mailauth.reports import open_store
from mailauth.reports.received import aggregate_xml
from mailauth.reports.received.aggregate_xml import KnownReport, read_aggregate
from mailauth.reports.received.importer import DUPLICATE, ERROR, IMPORTED, SourceItem, import_item
from mailauth.reports.received.model import ReportKind, report_key
from mailauth.reports.received.reader import read_reports

RECORD = (
    "<record><row><source_ip>{ip}</source_ip><count>{count}</count><policy_evaluated>"
    "<disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated>"
    "</row><identifiers><header_from>example.com</header_from></identifiers>"
    "<auth_results><dkim><domain>example.com</domain><result>pass</result></dkim>"
    "<spf><domain>example.com</domain><result>pass</result></spf></auth_results></record>"
)


def report(records: str, report_id: str = "dup-1") -> bytes:
    return (
        '<?xml version="1.0"?><feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">'
        "<version>1.0</version><report_metadata><org_name>Receiver</org_name>"
        f"<email>dmarc@receiver.example</email><report_id>{report_id}</report_id>"
        "<date_range><begin>1700006400</begin><end>1700092799</end></date_range>"
        "</report_metadata><policy_published><domain>example.com</domain><p>reject</p>"
        f"</policy_published>{records}</feedback>"
    ).encode()


GOOD = report(RECORD.format(ip="192.0.2.1", count=5) + RECORD.format(ip="192.0.2.2", count=7))
BROKEN = report("<record><row><source_ip>not an address</source_ip></row></record>" * 3)


def asking(asked: list[str], answer: bool) -> Callable[[str], bool]:
    """A ``known`` that notes each key it is asked about and gives ``answer``."""

    def known(key: str) -> bool:
        asked.append(key)
        return answer

    return known


KEY = report_key(ReportKind.AGGREGATE, "Receiver", "dmarc@receiver.example", "dup-1")


def test_known_is_asked_once_with_the_key_and_the_records_are_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []
    calls = {"records": 0}
    original = aggregate_xml._record

    def counting(*args: object) -> object:
        calls["records"] += 1
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(aggregate_xml, "_record", counting)
    with pytest.raises(KnownReport) as raised:
        read_aggregate(GOOD, known=asking(asked, True))
    assert asked == [KEY]
    assert (raised.value.key, raised.value.reporter, raised.value.report_id) == (
        KEY, "Receiver", "dup-1")  # fmt: skip
    assert calls["records"] == 0
    report_read = read_aggregate(GOOD, known=asking(asked, False))
    assert len(report_read.records) == 2
    assert calls["records"] == 2
    assert asked == [KEY, KEY]


def test_an_unknown_key_reads_the_report_whole_and_a_known_one_is_an_outcome() -> None:
    [unknown] = read_reports(GOOD, known=lambda key: False)
    assert unknown.report is not None and unknown.known is None
    [known] = read_reports(GOOD, known=lambda key: key == KEY)
    assert (known.report, known.error, known.kind) == (None, "", ReportKind.AGGREGATE)
    assert known.known is not None and known.known.key == KEY
    [plain] = read_reports(GOOD)
    assert plain.report == unknown.report


def test_a_report_without_a_report_id_is_not_looked_up_and_still_refused() -> None:
    asked: list[str] = []
    [outcome] = read_reports(report(RECORD.format(ip="192.0.2.1", count=1), report_id=""),
                             known=asking(asked, True))  # fmt: skip
    assert asked == []
    assert outcome.error == "no <report_id> in <report_metadata>"


def test_a_duplicate_with_broken_records_is_a_duplicate_with_the_stored_counts(
    store_url: str,
) -> None:
    store = open_store(store_url)
    try:
        [first] = import_item(store, SourceItem("a.xml", GOOD), now=1)
        assert (first.status, first.records, first.messages) == (IMPORTED, 2, 12)
        [broken_new] = import_item(store, SourceItem("b.xml", report("<record/>", "other")),
                                   now=2)  # fmt: skip
        assert broken_new.status == ERROR  # (a report not in the store is read whole)
        [again] = import_item(store, SourceItem("c.xml", BROKEN), now=3)
        seen = (again.status, again.kind, again.reporter, again.report_id, again.domain,
                again.records, again.messages, again.error)  # fmt: skip
        assert seen == (DUPLICATE, ReportKind.AGGREGATE, "Receiver", "dup-1", "example.com",
                        2, 12, "")  # fmt: skip
        [same] = import_item(store, SourceItem("a.xml", GOOD), now=4)
        assert (same.status, same.records, same.messages) == (DUPLICATE, 2, 12)
    finally:
        store.close()
