"""A throwaway Dovecot authentication service for a throwaway Postfix (tests/postfix.py): SMTP
AUTH (PLAIN, LOGIN) against a password file, over the unix socket ``private/auth`` in that
Postfix's queue directory (``smtpd_sasl_type = dovecot``, ``smtpd_sasl_path =
private/auth``), so that Postfix gives the milter a real ``{auth_authen}``. Needs root and
Debian's dovecot-core package (.ci/run installs it); nothing listens on the network.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = mailauth-test-{name}
protocols =
listen = 127.0.0.1
log_path = {root}/dovecot.log
auth_mechanisms = plain login
disable_plaintext_auth = no
ssl = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener {socket} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""

# What main.cf (or a service's -o options) needs to authenticate through it.
POSTFIX_SETTINGS = (
    "smtpd_sasl_auth_enable=yes",
    "smtpd_sasl_type=dovecot",
    "smtpd_sasl_path=private/auth",
)


def available() -> bool:
    return Path(DOVECOT).exists()


class ThrowawayDovecot:
    """``users``: name -> password. Start it once the Postfix instance has made its queue
    directory (``queue``); stopped and removed afterwards."""

    def __init__(self, queue: Path, users: Mapping[str, str]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mailauth-dovecot-", dir="/tmp"))
        self.socket = queue / "private" / "auth"
        self.users = dict(users)
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ThrowawayDovecot:
        for sub in ("run", "state"):
            (self.root / sub).mkdir()
        lines = [f"{user}:{{PLAIN}}{password}\n" for user, password in self.users.items()]
        (self.root / "passwd").write_text("".join(lines))
        # Dovecot's auth process runs as the dovecot user (test passwords only, 0644).
        self.root.chmod(0o755)
        (self.root / "passwd").chmod(0o644)
        config = self.root / "dovecot.conf"
        config.write_text(CONFIG.format(root=self.root, name=self.root.name, socket=self.socket))
        command = [DOVECOT, "-F", "-c", str(config)]
        self._process = subprocess.Popen(command, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if time.monotonic() > deadline or self._process.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"dovecot did not start: {self.log()[-2000:]}")
            time.sleep(0.05)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""
