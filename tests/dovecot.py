"""A real Dovecot IMAP server for the tests: its own configuration, state and mail in a
temporary directory, IMAP over TLS only (a self-signed certificate made here) on a loopback
port, one user with a password from a passwd-file; stopped at the end.

Dovecot runs its login and internal processes as unprivileged users: as root, Debian's
``dovenull`` and ``dovecot`` (the package creates them) and the mail belongs to ``dovecot``;
otherwise every process runs as the current user. The binary: ``dovecot`` on PATH or
/usr/sbin/dovecot (Debian's ``dovecot-imapd``).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def dovecot_binary() -> str | None:
    found = shutil.which("dovecot")
    if found:
        return found
    return "/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class DovecotServer:
    """``port``: the IMAPS port on 127.0.0.1 (``starttls_port``: IMAP with STARTTLS, which
    the server requires before a login); ``ca_file``: the certificate to trust;
    ``user``/``password``: the one account; ``maildir``: its Maildir."""

    user = "dmarc"
    password = "s3cret pass"

    def __init__(self) -> None:
        binary = dovecot_binary()
        if binary is None:
            raise RuntimeError("Dovecot is not installed (Debian's dovecot-imapd)")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="mailauth-dovecot-"))
        self.root.chmod(0o755)
        self.port = _free_port()
        self.starttls_port = _free_port()
        self.maildir = self.root / "home" / self.user / "Maildir"
        self.config = self.root / "dovecot.conf"
        self.ca_file = self.root / "cert.pem"

    def __enter__(self) -> DovecotServer:
        cert, key = _self_signed(self.root)
        if os.geteuid() == 0:
            login, internal = "dovenull", "dovecot"
        else:
            login = internal = pwd.getpwuid(os.geteuid()).pw_name
        mail_owner = pwd.getpwnam(internal)
        (self.root / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        for path in [self.root / "home", *(self.root / "home").rglob("*")]:
            os.chown(path, mail_owner.pw_uid, mail_owner.pw_gid)
        self.config.write_text(
            f"""\
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain
default_login_user = {login}
default_internal_user = {internal}
first_valid_uid = {mail_owner.pw_uid}
last_valid_uid = {mail_owner.pw_uid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_owner.pw_uid} gid={mail_owner.pw_gid} home={self.root}/home/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.starttls_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.port}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""
        )
        # Dovecot forks into the background: no pipes for it to hold open.
        with open(self.root / "start.log", "wb") as output:
            started = subprocess.run(
                [self.binary, "-c", str(self.config)], stdout=output, stderr=subprocess.STDOUT
            )
        if started.returncode != 0:
            text = (self.root / "start.log").read_text(errors="replace")
            shutil.rmtree(self.root, ignore_errors=True)
            raise RuntimeError(f"Dovecot did not start: {text[-2000:]}")
        deadline = time.monotonic() + 15
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                return self
            if time.monotonic() > deadline:
                log = self.root / "dovecot.log"
                text = log.read_text(errors="replace") if log.exists() else ""
                self.__exit__()
                raise RuntimeError(f"Dovecot did not start listening: {text[-2000:]}")
            time.sleep(0.05)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def __exit__(self, *exc: object) -> None:
        pid_file = self.root / "run" / "master.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)

    def deliver(self, raw: bytes, folder: str = "") -> None:
        """Put one message into the account's Maildir (``folder``: "" for INBOX, else the
        Maildir++ folder name such as "Archive")."""
        base = self.maildir if not folder else self.maildir / f".{folder}"
        for sub in ("cur", "new", "tmp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}.{os.getpid()}.mailauth-test"
        target = base / "new" / name
        target.write_bytes(raw)
        owner = pwd.getpwuid(os.stat(self.maildir).st_uid)
        for path in (base, base / "cur", base / "new", base / "tmp", target):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def folder_count(self, folder: str = "") -> int:
        base = self.maildir if not folder else self.maildir / f".{folder}"
        return sum(
            1 for sub in ("cur", "new") if (base / sub).exists() for _ in (base / sub).iterdir()
        )
