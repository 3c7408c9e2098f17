"""The report store's schema: numbered migrations, applied forward, one SQL for both engines.

Each migration is a list of statements in the SQL that SQLite (3.24+) and PostgreSQL share
(TEXT, BIGINT, composite primary keys, ``INSERT ... ON CONFLICT``). The version reached is
kept in ``mailauth_schema``; :meth:`mailauth.reports.store.Store.migrate` applies the
missing ones in one transaction, under the store's write lock (two milters starting at once
migrate once). A store newer than this code is refused rather than written to.

Tables (docs/reports.md, "Schema"):

- ``report_counts``: the aggregate report rows being counted, one per (policy domain,
  period, row key), the key's columns beside it; ``messages`` is the count.
- ``report_policies``: the published policy per policy domain and period, the last seen.
- ``outgoing_reports``: per (policy domain, period), the report's send state: its
  Report-ID and file name (fixed when first claimed, so that a re-send uses them again),
  ``pending``/``claimed``/``sent``/``abandoned``, attempts, the claim's owner and lease, the
  destinations already delivered to, the last error.

Later issues add tables with migrations of their own (the reports received by domain
owners: ``incoming_*``), never by changing these.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: recording and sending aggregate reports (issue 16)
        """CREATE TABLE report_counts (
            policy_domain TEXT NOT NULL,
            period_begin BIGINT NOT NULL,
            row_key TEXT NOT NULL,
            source_ip TEXT NOT NULL,
            header_from TEXT NOT NULL,
            envelope_from TEXT NOT NULL,
            envelope_to TEXT NOT NULL,
            dkim TEXT NOT NULL,
            spf_domain TEXT NOT NULL,
            spf_scope TEXT NOT NULL,
            spf_result TEXT NOT NULL,
            dmarc_dkim TEXT NOT NULL,
            dmarc_spf TEXT NOT NULL,
            disposition TEXT NOT NULL,
            reasons TEXT NOT NULL,
            messages BIGINT NOT NULL,
            PRIMARY KEY (policy_domain, period_begin, row_key)
        )""",
        """CREATE TABLE report_policies (
            policy_domain TEXT NOT NULL,
            period_begin BIGINT NOT NULL,
            period_end BIGINT NOT NULL,
            p TEXT NOT NULL,
            sp TEXT NOT NULL,
            np TEXT NOT NULL,
            adkim TEXT NOT NULL,
            aspf TEXT NOT NULL,
            testing TEXT NOT NULL,
            psd TEXT NOT NULL,
            fo TEXT NOT NULL,
            discovery TEXT NOT NULL,
            rua TEXT NOT NULL,
            ruf TEXT NOT NULL,
            last_seen BIGINT NOT NULL,
            PRIMARY KEY (policy_domain, period_begin)
        )""",
        "CREATE INDEX report_policies_end ON report_policies (period_end)",
        """CREATE TABLE outgoing_reports (
            policy_domain TEXT NOT NULL,
            period_begin BIGINT NOT NULL,
            period_end BIGINT NOT NULL,
            report_id TEXT NOT NULL,
            file_name TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            claimed_by TEXT NOT NULL,
            claimed_until BIGINT NOT NULL,
            delivered TEXT NOT NULL,
            last_error TEXT NOT NULL,
            created BIGINT NOT NULL,
            sent_at BIGINT NOT NULL,
            PRIMARY KEY (policy_domain, period_begin)
        )""",
        "CREATE INDEX outgoing_reports_state ON outgoing_reports (state, claimed_until)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
