"""Received reports built by hand for the tests: aggregate XML, TLS JSON, report e-mails."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from email.message import EmailMessage
from pathlib import Path

REAL_WORLD = Path(__file__).resolve().parent.parent / "fixtures/dmarc-reports/real-world"

RECORD = """<record>
    <row><source_ip>{ip}</source_ip><count>{count}</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>fail</spf>
      </policy_evaluated></row>
    <identifiers><header_from>example.com</header_from></identifiers>
    <auth_results><dkim><domain>example.com</domain><selector>s1</selector>
      <result>pass</result></dkim>
      <spf><domain>example.com</domain><scope>mfrom</scope><result>fail</result></spf>
    </auth_results>
  </record>
"""


def aggregate_xml(
    records: int = 2,
    *,
    report_id: str = "id-1",
    org: str = "Receiver",
    namespace: bool = True,
    declaration: str = '<?xml version="1.0" encoding="UTF-8"?>\n',
    domain: str = "example.com",
) -> str:
    xmlns = ' xmlns="urn:ietf:params:xml:ns:dmarc-2.0"' if namespace else ""
    rows = "".join(RECORD.format(ip=f"192.0.2.{n % 250 + 1}", count=n + 1) for n in range(records))
    return (
        f"{declaration}<feedback{xmlns}>\n  <version>1.0</version>\n"
        f"  <report_metadata><org_name>{org}</org_name><email>dmarc@receiver.example</email>"
        f"<report_id>{report_id}</report_id><date_range><begin>1700000000</begin>"
        "<end>1700086399</end></date_range></report_metadata>\n"
        f"  <policy_published><domain>{domain}</domain><p>reject</p><sp>none</sp>"
        "<testing>n</testing></policy_published>\n"
        f"  {rows}</feedback>\n"
    )


TLS_REPORT = {
    "organization-name": "Company-X",
    "date-range": {"start-datetime": "2016-04-01T00:00:00Z",
                   "end-datetime": "2016-04-01T23:59:59Z"},
    "contact-info": "sts-reporting@company-x.example",
    "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    "policies": [{
        "policy": {"policy-type": "sts",
                   "policy-string": ["version: STSv1", "mode: testing",
                                     "mx: *.mail.company-y.example", "max_age: 86400"],
                   "policy-domain": "company-y.example",
                   "mx-host": ["*.mail.company-y.example"]},
        "summary": {"total-successful-session-count": 5326,
                    "total-failure-session-count": 303},
        "failure-details": [
            {"result-type": "certificate-expired", "sending-mta-ip": "2001:db8:abcd:0012::1",
             "receiving-mx-hostname": "mx1.mail.company-y.example",
             "failed-session-count": 100},
            {"result-type": "starttls-not-supported", "sending-mta-ip": "2001:db8:abcd:0013::1",
             "receiving-mx-hostname": "mx2.mail.company-y.example",
             "receiving-ip": "203.0.113.56", "failed-session-count": 200,
             "additional-information": "https://reports.company-x.example/"
                                       "report_info?id=5065427c-23d3#StarttlsNotSupported"},
            {"result-type": "validation-failure", "receiving-ip": "198.51.100.62",
             "receiving-mx-hostname": "mx-backup.mail.company-y.example",
             "failed-session-count": 3, "sending-mta-ip": "198.51.100.62",
             "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"},
        ],
    }],
}  # fmt: skip
"""RFC 8460 section 4.8's example report."""


def tls_json() -> bytes:
    return json.dumps(TLS_REPORT).encode()


def zipped(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def gzipped(content: bytes) -> bytes:
    return gzip.compress(content, mtime=0)


def report_mail(attachments: list[tuple[str, str, bytes]], subject: str = "Report Domain: "
                "example.com Submitter: receiver.example Report-ID: <id-1>",
                sender: str = "dmarc@receiver.example") -> bytes:  # fmt: skip
    """An e-mail from ``sender`` with these (file name, media type, content) attachments."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "rua@example.com"
    message["Subject"] = subject
    message["Message-ID"] = "<report-1@receiver.example>"
    message["Date"] = "Wed, 15 Nov 2023 00:00:00 +0000"
    message.set_content("This is an aggregate report.")
    for name, media_type, content in attachments:
        maintype, _, subtype = media_type.partition("/")
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes()
