"""The throwaway Postfix the milter, signing and report tests run (tests/postfix.py): its
main.cf holds one line per parameter and must draw no warning, because a warning logged by
every starting process can hang the instance for good (the module's docstring says how)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.postfix import ThrowawayPostfix, main_cf

AVAILABLE = shutil.which("postfix") is not None and os.geteuid() == 0
# (on a developer's machine without them; never in CI, where .ci/run installs Postfix and a
# missing one fails these tests)
NEEDS_POSTFIX = pytest.mark.skipif(
    not AVAILABLE and not os.environ.get("CI"), reason="needs Debian's postfix package and root"
)


def test_settings_change_a_line_in_place_or_add_one() -> None:
    text = "myhostname = mx.example.org\ninet_protocols = ipv4\n"
    changed = main_cf(text, {"myhostname": "border.example.org", "biff": "no"})
    assert changed == "myhostname = border.example.org\ninet_protocols = ipv4\nbiff = no\n"


@NEEDS_POSTFIX
def test_a_config_postconf_warns_about_is_refused_before_postfix_starts() -> None:
    instance = ThrowawayPostfix(None, {"no_such_parameter": "1"})
    with pytest.raises(RuntimeError, match="unused parameter: no_such_parameter"), instance:
        pytest.fail("Postfix started with a config postconf warns about")
    assert not instance.root.exists()


@NEEDS_POSTFIX
def test_a_parameter_twice_in_main_cf_is_refused() -> None:
    """(settings cannot write one twice: a line added to main.cf by hand, as a test might)"""
    instance = ThrowawayPostfix(None)
    instance.config.mkdir(parents=True)
    (instance.config / "main.cf").write_text("biff = no\nbiff = yes\n")
    (instance.config / "master.cf").write_text("")
    try:
        with pytest.raises(RuntimeError, match="overriding earlier entry: biff=no"):
            instance._check_config()
    finally:
        shutil.rmtree(instance.root)


@NEEDS_POSTFIX
def test_no_process_of_the_instance_outlives_it() -> None:
    with ThrowawayPostfix(None, {"myhostname": "border.example.org"}) as instance:
        started = instance._processes()
        assert instance.pids()[0] in started and len(started) >= 3  # master, pickup, qmgr
        assert "overriding earlier entry" not in instance.log()
    assert not instance._processes() and not instance.killed  # (all gone at postfix stop)
