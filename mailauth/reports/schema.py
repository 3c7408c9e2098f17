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
- ``failure_reports`` (version 4): the RFC 9991 failure reports waiting to be sent, one
  per message and Auth-Failure type: the facts (JSON), the original header section (and
  body, on opt-in; ``BYTEA``, which SQLite stores as a BLOB), the ruf URIs the rate limit
  let through, and the same send state as ``outgoing_reports`` with ``next_try`` (backoff).
  Sent or abandoned reports keep no message data.
- ``failure_rate`` (version 4): failure reports queued per destination address and rate
  window (the limit holds across processes).
- ``failure_reports.queue_owner`` (version 7): the organisational domain whose share of the
  queue the report takes (:func:`mailauth.reports.failure_queue.queue_owner`), indexed with
  ``state``: a batch counts the reports waiting of its own organisations only.
- ``report_writes`` (version 8): the id of each transaction a writer thread committed
  (the recorder's counts, the failure collector's queue) and when, kept a day: after a
  connection lost at COMMIT, the writer looks its id up to know whether the rows went in
  (:meth:`mailauth.reports.store.Store.write`), rather than writing them twice.

Migration 2 (issue 17): the reports a domain owner *receives*, read by
:mod:`mailauth.reports.received` and written by :mod:`mailauth.reports.received.storage`.
Each report is keyed by ``report_key``: a digest of (kind, reporter org, reporter e-mail,
Report-ID), so that the same report is stored once however often it is imported. Dates are
Unix times (seconds, UTC); lists are JSON text; an absent value is ``""`` (or 0 for numbers).
The domain and date columns are copied into the row tables, so that a summary of one domain
over a period reads one index range and no join.

- ``received_aggregate``: one per aggregate report: reporter, Report-ID, policy domain,
  date range, the published policy (p, sp, np, adkim, aspf, pct, fo, testing,
  discovery_method), the format (``rfc9990``, ``rfc7489``), row and message totals.
- ``received_records``: the report's rows, each with its report's reporter, policy domain
  and dates: source IP, count, disposition, policy-evaluated DKIM and SPF, reasons (JSON
  ``[[type, comment], ...]``), header_from, envelope_from, envelope_to, auth_results DKIM
  (JSON ``[[domain, selector, result, human_result], ...]``) and SPF (JSON ``[[domain,
  scope, result, human_result], ...]``).
- ``received_failures``: one per failure report (RFC 9991 / RFC 6591 ARF or plain text):
  arrival date, source IP, reported domain, auth-failure type, the identities, the original
  headers (capped), the delivery result.
- ``received_tls``: one per SMTP TLS report (RFC 8460); ``received_tls_policies``: its
  policies with success/failure counts and failure details (JSON).

Migration 5 (issue 17, review finding F4: a forged report took the real one's key): each
received report's authentication (:mod:`mailauth.reports.received.authenticate`):
``auth_domain`` (the d= of the report e-mail's aligned passing DKIM signature; "" for
none and for a bare file), ``auth_result`` (``pass``, ``fail``, ``none``, ``temperror``,
``permerror``; "" for the rows imported before), ``from_domain`` (the report e-mail's
From domain). The key of an authenticated report includes ``auth_domain``
(:func:`mailauth.reports.received.model.report_key`): rows stored before keep theirs.
``trust`` (``received_aggregate`` and, copied, ``received_records``): ``authenticated``
(by the reporter's organisational domain: counted in summaries), ``unauthenticated``, or
``superseded`` (an unauthenticated copy of a report stored authenticated too).

Migration 6 (issue 17): ``received_records.auth_domain``, its report's (in the covering
index of summaries), so that reporters are listed by the domain that signed their reports,
not by the ``org_name`` the XML claims; an index on ``received_failures.report_id``.
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
    (  # 2: the reports a domain owner receives (issue 17)
        """CREATE TABLE received_aggregate (
            report_key TEXT PRIMARY KEY,
            org_name TEXT NOT NULL,
            email TEXT NOT NULL,
            extra_contact_info TEXT NOT NULL,
            report_id TEXT NOT NULL,
            policy_domain TEXT NOT NULL,
            date_begin BIGINT NOT NULL,
            date_end BIGINT NOT NULL,
            p TEXT NOT NULL,
            sp TEXT NOT NULL,
            np TEXT NOT NULL,
            adkim TEXT NOT NULL,
            aspf TEXT NOT NULL,
            pct TEXT NOT NULL,
            fo TEXT NOT NULL,
            testing TEXT NOT NULL,
            discovery_method TEXT NOT NULL,
            format TEXT NOT NULL,
            generator TEXT NOT NULL,
            errors TEXT NOT NULL,
            notes TEXT NOT NULL,
            records BIGINT NOT NULL,
            messages BIGINT NOT NULL,
            source TEXT NOT NULL,
            imported_at BIGINT NOT NULL
        )""",
        "CREATE INDEX received_aggregate_domain ON received_aggregate (policy_domain, date_begin)",
        """CREATE TABLE received_records (
            report_key TEXT NOT NULL,
            record_no INTEGER NOT NULL,
            org_name TEXT NOT NULL,
            policy_domain TEXT NOT NULL,
            date_begin BIGINT NOT NULL,
            date_end BIGINT NOT NULL,
            source_ip TEXT NOT NULL,
            messages BIGINT NOT NULL,
            disposition TEXT NOT NULL,
            dkim TEXT NOT NULL,
            spf TEXT NOT NULL,
            reasons TEXT NOT NULL,
            header_from TEXT NOT NULL,
            envelope_from TEXT NOT NULL,
            envelope_to TEXT NOT NULL,
            auth_dkim TEXT NOT NULL,
            auth_spf TEXT NOT NULL,
            PRIMARY KEY (report_key, record_no)
        )""",
        "CREATE INDEX received_records_domain ON received_records (policy_domain, date_begin)",
        "CREATE INDEX received_records_source ON received_records (source_ip)",
        """CREATE TABLE received_failures (
            report_key TEXT PRIMARY KEY,
            reporter TEXT NOT NULL,
            email TEXT NOT NULL,
            report_id TEXT NOT NULL,
            arrival_date BIGINT NOT NULL,
            source_ip TEXT NOT NULL,
            reported_domain TEXT NOT NULL,
            feedback_type TEXT NOT NULL,
            auth_failure TEXT NOT NULL,
            identity_alignment TEXT NOT NULL,
            header_from TEXT NOT NULL,
            original_mail_from TEXT NOT NULL,
            original_rcpt_to TEXT NOT NULL,
            dkim_domain TEXT NOT NULL,
            dkim_identity TEXT NOT NULL,
            dkim_selector TEXT NOT NULL,
            spf_dns TEXT NOT NULL,
            authentication_results TEXT NOT NULL,
            delivery_result TEXT NOT NULL,
            message_id TEXT NOT NULL,
            subject TEXT NOT NULL,
            user_agent TEXT NOT NULL,
            arf TEXT NOT NULL,
            original_headers TEXT NOT NULL,
            source TEXT NOT NULL,
            imported_at BIGINT NOT NULL
        )""",
        "CREATE INDEX received_failures_domain ON received_failures "
        "(reported_domain, arrival_date)",
        """CREATE TABLE received_tls (
            report_key TEXT PRIMARY KEY,
            org_name TEXT NOT NULL,
            email TEXT NOT NULL,
            report_id TEXT NOT NULL,
            date_begin BIGINT NOT NULL,
            date_end BIGINT NOT NULL,
            policies BIGINT NOT NULL,
            success BIGINT NOT NULL,
            failure BIGINT NOT NULL,
            source TEXT NOT NULL,
            imported_at BIGINT NOT NULL
        )""",
        """CREATE TABLE received_tls_policies (
            report_key TEXT NOT NULL,
            policy_no INTEGER NOT NULL,
            policy_domain TEXT NOT NULL,
            date_begin BIGINT NOT NULL,
            date_end BIGINT NOT NULL,
            policy_type TEXT NOT NULL,
            policy_strings TEXT NOT NULL,
            mx_hosts TEXT NOT NULL,
            success BIGINT NOT NULL,
            failure BIGINT NOT NULL,
            failure_details TEXT NOT NULL,
            PRIMARY KEY (report_key, policy_no)
        )""",
        "CREATE INDEX received_tls_policies_domain ON received_tls_policies "
        "(policy_domain, date_begin)",
    ),
    (  # 3: covering indexes for summaries and the dashboard (issue 17; mailauth.reports.summary)
        # A summary is one scan of the first, in its GROUP BY's order (no sort of the rows,
        # whatever the period), never reading the table; the dashboard's daily pass rate one
        # of the second, in date order: a year of one domain in about a second on SQLite.
        "CREATE INDEX received_records_sources ON received_records (policy_domain, source_ip, "
        "org_name, disposition, dkim, spf, auth_dkim, auth_spf, date_begin, messages)",
        "CREATE INDEX received_records_days ON received_records "
        "(policy_domain, date_begin, dkim, spf, messages)",
    ),
    (  # 4: the queue of RFC 9991 failure reports and their rate windows (issue 16, item 4)
        """CREATE TABLE failure_reports (
            id TEXT PRIMARY KEY,
            policy_domain TEXT NOT NULL,
            auth_failure TEXT NOT NULL,
            ruf TEXT NOT NULL,
            facts TEXT NOT NULL,
            original BYTEA NOT NULL,
            has_body INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            next_try BIGINT NOT NULL,
            claimed_by TEXT NOT NULL,
            claimed_until BIGINT NOT NULL,
            delivered TEXT NOT NULL,
            last_error TEXT NOT NULL,
            created BIGINT NOT NULL,
            sent_at BIGINT NOT NULL
        )""",
        "CREATE INDEX failure_reports_state ON failure_reports (state, next_try)",
        """CREATE TABLE failure_rate (
            destination TEXT NOT NULL,
            window_begin BIGINT NOT NULL,
            reports INTEGER NOT NULL,
            PRIMARY KEY (destination, window_begin)
        )""",
    ),
    (  # 5: received reports' authentication (issue 17, review finding F4)
        # The rows of versions 2-4 keep their keys and become unauthenticated: auth_domain
        # "", auth_result "" (not checked), trust 'unauthenticated'.
        *(
            f"ALTER TABLE {table} ADD COLUMN {column} TEXT NOT NULL DEFAULT ''"
            for table in ("received_aggregate", "received_failures", "received_tls")
            for column in ("auth_domain", "auth_result", "from_domain")
        ),
        "ALTER TABLE received_aggregate ADD COLUMN trust TEXT NOT NULL DEFAULT 'unauthenticated'",
        "ALTER TABLE received_records ADD COLUMN trust TEXT NOT NULL DEFAULT 'unauthenticated'",
        "CREATE INDEX received_aggregate_report_id ON received_aggregate (report_id)",
        # the covering indexes of version 3, with trust in the order the queries group by
        "DROP INDEX received_records_sources",
        "CREATE INDEX received_records_sources ON received_records (policy_domain, source_ip, "
        "org_name, disposition, dkim, spf, auth_dkim, auth_spf, trust, date_begin, messages)",
        "DROP INDEX received_records_days",
        "CREATE INDEX received_records_days ON received_records "
        "(policy_domain, date_begin, dkim, spf, trust, messages)",
    ),
    (  # 6: reporters shown by their authenticated domain (issue 17, item 2)
        # The records carry their report's auth_domain, as they carry its org_name and
        # trust: a summary lists an authenticated report's reporter by it (org_name is the
        # XML's own claim) from the same one index scan. The rows of version 5 copied.
        "ALTER TABLE received_records ADD COLUMN auth_domain TEXT NOT NULL DEFAULT ''",
        # (COALESCE: a record whose report row is gone, deleted by hand, keeps '')
        "UPDATE received_records SET auth_domain = COALESCE((SELECT a.auth_domain FROM "
        "received_aggregate a WHERE a.report_key = received_records.report_key), '') "
        "WHERE trust = 'authenticated'",
        "DROP INDEX received_records_sources",
        "CREATE INDEX received_records_sources ON received_records (policy_domain, source_ip, "
        "org_name, auth_domain, disposition, dkim, spf, auth_dkim, auth_spf, trust, "
        "date_begin, messages)",
        # a failure report's other copies (the dashboard shows one of them)
        "CREATE INDEX received_failures_report_id ON received_failures (report_id)",
    ),
    (  # 7: each queued failure report's organisation, indexed (issue 16: the share's count)
        # Rows queued before get theirs when a batch next needs the counts
        # (failure_queue._own_unowned: the Public Suffix List is Python's, not SQL's).
        "ALTER TABLE failure_reports ADD COLUMN queue_owner TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX failure_reports_owner ON failure_reports (queue_owner, state)",
    ),
    (  # 8: the writers' transactions, by a random id (REVIEW25B 7: a commit's lost answer)
        # A new table: no lock on the others, a moment whatever the store holds.
        "CREATE TABLE report_writes (id TEXT PRIMARY KEY, at BIGINT NOT NULL)",
        "CREATE INDEX report_writes_at ON report_writes (at)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
