"""What the importer cannot carry over, setting by setting, and why: the text of the note
each such setting gets (``FILE:LINE: Name: text``). An empty text: the setting is read
together with another one, where its note is made if it needs one."""

from __future__ import annotations

# Settings of both daemons that mailauth has no use for, and why (one note each).
NO_EQUIVALENT = {
    "autorestart": "systemd restarts the milter (Restart=on-failure in the unit: docs/install.md)",
    "autorestartcount": "systemd restarts the milter (StartLimitBurst= in the unit)",
    "autorestartrate": "systemd restarts the milter (StartLimitIntervalSec= in the unit)",
    "background": "mailauth runs in the foreground under systemd (Type=simple)",
    "changerootdirectory": "no chroot: use the unit's hardening options (docs/install.md)",
    "enablecoredumps": "no equivalent (LimitCORE= in the systemd unit)",
    "milterdebug": "no equivalent (the milter logs one line per message)",
    "pidfile": "no PID file: systemd tracks the process",
    "userid": "mailauth does not change user: run it as that user (User=/Group= in the "
    "systemd unit), with read access to the key files",
    "softwareheader": "no equivalent (mailauth adds no software header field)",
    "temporarydirectory": "no equivalent (mailauth writes no temporary files)",
    "syslogsuccess": "no equivalent: mailauth always logs one line per message",
}
# What OpenDKIM's settings are to mailauth when there is nothing to write (one note each).
OPENDKIM_ONLY = {
    "alwaysaddarheader": "mailauth adds Authentication-Results to the mail it verifies "
    "only; mail it signs gets none",
    "atps": "ATPS (RFC 6541, experimental) is not implemented",
    "bodylengthdb": "no equivalent: the whole body is always signed (no l=, RFC 6376 8.2)",
    "clockdrift": "fixed: mailauth allows 300 seconds for t= in the future",
    "diagnostics": "no z= copies of header fields are written or used",
    "diagnosticdirectory": "no equivalent",
    "dnsconnect": "mailauth queries over UDP, then TCP when truncated",
    "domainkeyscompat": "DomainKeys (RFC 4870, historic) is not implemented",
    "externalignorelist": "no equivalent: these hosts' mail is verified as any other "
    "outside client's (in OpenDKIM the list only silences a log line about them)",
    "fixcrlf": "mailauth takes the MTA's line endings as given (Postfix sends CRLF)",
    "identityheader": "no equivalent (the i= identity is not set)",
    "includequarantinedmessages": "no equivalent",
    "keepauthenticationresults": "mailauth removes every field with its own authserv-id "
    "(docs/milter.md); fields with trusted ids: inbound.trusted_authserv_ids",
    "keeptemporaryfiles": "no temporary files are written",
    "logresults": "no equivalent: the per-message log line gives the results",
    "logwhy": "no equivalent: the per-message log line gives the results",
    "maximumsignedbytes": "no equivalent: the whole body is signed (no l=)",
    "minimumkeybits": "verifying RSA keys of 1024 bits and more is a fixed rule "
    "(RFC 8301 3.2); signing keys: signing.min_key_bits",
    "multiplesignatures": "",  # (read with the SigningTable)
    "mustbesigned": "no equivalent",
    "peerlist": "no equivalent: Postfix's smtpd_milters per service decides which "
    "clients' mail reaches the milter",
    "querycache": "mailauth always caches DNS answers (within their TTL)",
    "quarantine": "no equivalent",
    "removeoldsignatures": "no equivalent: DKIM-Signature fields are kept",
    "reportaddress": "DKIM failure reports (RFC 6651) are not sent",
    "reportbccaddress": "DKIM failure reports (RFC 6651) are not sent",
    "requiresafekeys": "mailauth warns about a key file others can read and starts anyway",
    "resolverconfiguration": "unbound's settings do not apply: [dns] nameservers, timeout",
    "sendreports": "DKIM failure reports (RFC 6651) are not sent",
    "signaturealgorithm": "the key decides: rsa-sha256 for RSA keys, ed25519-sha256 for "
    "Ed25519 keys (rsa-sha1 is never used to sign, RFC 8301)",
    "strictheaders": "no equivalent (header checks: inbound.required_headers)",
    "trustanchorfile": "DNSSEC is not validated by mailauth (a validating resolver in "
    "[dns] nameservers can)",
    "x-header": "no equivalent",
}
OPENDMARC_ONLY = {
    "basedirectory": "",  # (relative paths start there)
    "copyfailuresto": "no copies of failing mail are sent",
    "dnsreportingdomain": "no equivalent",
    "failurereports": "DMARC failure reports (RFC 9991) are not sent by the milter; "
    "aggregate reports: [reports] (docs/reports.md)",
    "failurereportsbcc": "DMARC failure reports are not sent by the milter",
    "failurereportsonnone": "DMARC failure reports are not sent by the milter",
    "failurereportssentby": "DMARC failure reports are not sent by the milter",
    "historyfile": "no history file: the milter records each evaluation into [reports] "
    "store (SQLite or PostgreSQL) and `mailauth reports send` sends the aggregate reports "
    "(docs/reports.md); set [reports] store, org_name and email",
    "holdquarantinedmessages": "",  # (read with RejectFailures)
    "publicsuffixlist": "mailauth finds organizational domains by DNS tree walk "
    "(RFC 9989), not from a public suffix list file",
    "recordallmessages": "every evaluation is recorded when [reports] store is set",
    "reportcommand": "reports are sent by `mailauth reports send` (SMTP, docs/reports.md)",
    "spfignoreresults": "",  # (read with SPFSelfValidate)
    "spfselfvalidate": "",
}
