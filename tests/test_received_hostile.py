"""Hostile received reports through ``mailauth reports import``: each refused or bounded with
one line naming the file, the rest imported, nothing read from outside, nothing written
outside the store."""

from __future__ import annotations

import io
import socket
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest

from mailauth.cli import main
from mailauth.reports import open_store
from mailauth.reports.received import received_reports
from mailauth.reports.received.limits import MIB
from mailauth.reports.received.reader import read_reports
from tests.received_helpers import aggregate_xml, zipped
from tests.report_auth_helpers import NO_KEYS

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE feedback [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<feedback><report_metadata><org_name>&lol9;</org_name></report_metadata></feedback>
"""
DTD_REFUSED = ("refused: the XML has a DTD or entity declarations (a DMARC report has none; "
               "they are never read)")  # fmt: skip


def _import(
    tmp_path: Path, *paths: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str], str]:
    code = main(["reports", "import", "--store", str(tmp_path / "store.sqlite"),
                 *map(str, paths), "--dns-zone", str(NO_KEYS)])  # fmt: skip
    out, err = capsys.readouterr()
    return code, err.splitlines(), out


def _one_refusal(tmp_path: Path, name: str, data: bytes, error: str,
                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """``data`` as file ``name`` beside a good report: one line for it, the good one stored."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / name).write_bytes(data)
    (inputs / "good.xml").write_text(aggregate_xml(report_id="good"))
    code, err, out = _import(tmp_path, inputs, capsys=capsys)
    assert code == 1
    assert err == [f"mailauth reports import: {inputs / name}{error}"]
    assert out == "1 reports imported, 0 already in the store, 1 unreadable (from 2 inputs)\n"
    store = open_store(str(tmp_path / "store.sqlite"))
    try:
        assert [r.report_id for r in received_reports(store, "example.com")] == ["good"]
    finally:
        store.close()
    assert _names(tmp_path) == ["in", "store.sqlite"]
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == sorted([name, "good.xml"])


def _names(directory: Path) -> list[str]:
    """The names in ``directory`` (SQLite's -wal and -shm files left out)."""
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(("-wal", "-shm")))


def test_billion_laughs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_refusal(tmp_path, "laughs.xml", BILLION_LAUGHS, f": {DTD_REFUSED}", capsys)


def test_an_external_entity_is_never_read(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET\n")
    xxe = (
        aggregate_xml()
        .replace(
            '<?xml version="1.0" encoding="UTF-8"?>\n',
            f'<?xml version="1.0"?>\n<!DOCTYPE feedback [<!ENTITY x SYSTEM "file://{secret}">]>\n',
        )
        .replace("<org_name>Receiver</org_name>", "<org_name>&x;</org_name>")
    )
    passwd = xxe.replace(f"file://{secret}", "file:///etc/passwd")
    for data in (xxe, passwd):
        outcomes = read_reports(data.encode())
        assert [(o.report, o.error) for o in outcomes] == [(None, DTD_REFUSED)]
    secret.unlink()
    _one_refusal(tmp_path, "xxe.xml", xxe.encode(), f": {DTD_REFUSED}", capsys)
    assert b"SECRET" not in (tmp_path / "store.sqlite").read_bytes()


def test_an_external_dtd_is_never_fetched() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    data = aggregate_xml().replace(
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<?xml version="1.0"?>\n<!DOCTYPE feedback SYSTEM "http://127.0.0.1:{port}/x.dtd">\n',
    )
    try:
        assert [o.error for o in read_reports(data.encode())] == [DTD_REFUSED]
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def _gzip_bomb(octets: int) -> bytes:
    """``octets`` zeros as gzip members of 16 MiB each, one after another (RFC 1952 2.2)."""
    member = zlib.compress(b"\0" * (16 * MIB), 9, wbits=31)
    return member * (octets // (16 * MIB))


def test_a_gzip_bomb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = _gzip_bomb(1024 * MIB)  # 1 GiB of zeros in about 1 MB
    assert len(bomb) < 2 * MIB
    tracemalloc.start()
    try:
        [outcome] = read_reports(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome.error == "refused: gzip data expands beyond 64 MiB (a decompression bomb?)"
    assert peak < 100 * MIB  # (the budget, and no more)
    _one_refusal(tmp_path, "bomb.xml.gz", bomb, f": {outcome.error}", capsys)


def test_a_zip_bomb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("report.xml", "w", force_zip64=True) as member,
    ):
        for _ in range(200):
            member.write(b"\0" * MIB)
    error = "refused: zip member report.xml expands beyond 64 MiB (a decompression bomb?)"
    _one_refusal(tmp_path, "bomb.zip", out.getvalue(), f": {error}", capsys)


def test_a_zip_bomb_that_lies_about_its_size() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("r.xml", b"\0" * (80 * MIB))
    data = bytearray(out.getvalue())
    # (the central directory's uncompressed size says 1000 octets: the read stops there)
    at = data.rfind(b"PK\x01\x02")
    data[at + 24 : at + 28] = (1000).to_bytes(4, "little")
    [outcome] = read_reports(bytes(data))
    assert (outcome.report, outcome.error) == (
        None, "zip member r.xml: cannot be read: Bad CRC-32 for file 'r.xml'"
    )  # fmt: skip


def test_a_zip_of_many_members(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = zipped({f"r{n}.xml": b"<x/>" for n in range(1000)})
    _one_refusal(tmp_path, "many.zip", data,
                 ": refused: a zip archive of 1,000 members (at most 100)", capsys)  # fmt: skip


def test_member_names_are_never_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    data = zipped({
        "../../evil.xml": aggregate_xml(report_id="a").encode(),
        "/tmp/evil-absolute.xml": aggregate_xml(report_id="b").encode(),
        "..\\..\\evil\x1b[31m.xml": aggregate_xml(report_id="c").encode(),
    })  # fmt: skip
    (tmp_path / "traversal.zip").write_bytes(data)
    code, err, out = _import(tmp_path, tmp_path / "traversal.zip", capsys=capsys)
    assert (code, err) == (0, [])
    assert out.startswith("3 reports imported")
    assert not (tmp_path / "evil.xml").exists() and not (tmp_path / "work/evil.xml").exists()
    assert not Path("/tmp/evil-absolute.xml").exists()
    assert _names(tmp_path) == ["store.sqlite", "traversal.zip", "work"]
    assert list((tmp_path / "work").rglob("*")) == [work]
    outcomes = read_reports(data)
    assert [o.part for o in outcomes] == ["../../evil.xml", "/tmp/evil-absolute.xml",
                                          "..\\..\\evil?[31m.xml"]  # fmt: skip


def test_a_100_mb_report_is_refused_unread(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    inputs = tmp_path / "in"
    inputs.mkdir()
    big = inputs / "big.xml"
    head = aggregate_xml(1).encode()
    with big.open("wb") as handle:
        handle.write(head[: head.index(b"<record>")])
        filler = b"<!-- " + b"x" * (MIB - 10) + b" -->\n"
        for _ in range(100):
            handle.write(filler)
        handle.write(b"</feedback>\n")
    assert big.stat().st_size > 100 * 10**6
    (inputs / "good.xml").write_text(aggregate_xml(report_id="good"))
    tracemalloc.start()
    try:
        code, err, _ = _import(tmp_path, inputs, capsys=capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 1
    assert err == [f"mailauth reports import: {big}: refused: larger than 64 MiB"]
    assert peak < 80 * MIB
    # The same report compressed (1 MB on disk): refused when it expands past the budget.
    compressed = zlib.compressobj(9, zlib.DEFLATED, 31)
    gz = compressed.compress(big.read_bytes()) + compressed.flush()
    big.unlink()
    [outcome] = read_reports(gz)
    assert outcome.error == "refused: gzip data expands beyond 64 MiB (a decompression bomb?)"
