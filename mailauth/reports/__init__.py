"""DMARC reports: the report store, recording, RFC 9990/9991 writers and their delivery."""
