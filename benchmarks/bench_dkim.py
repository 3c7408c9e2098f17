"""DKIM signatures and verifications per second, mailauth beside dkimpy, in one run.

A 5 KB plain-text message (prose), RSA-2048 and Ed25519 keys made for the run,
relaxed/relaxed. Verification takes its key from a warm cache: mailauth asks
``mailauth.dns.Resolver`` (cached) in front of a DNS server on loopback; dkimpy gets the
record from an in-memory dict (its fastest possible DNS). Both run on one core, in this
process, in alternating rounds; each rate is the median round. The "OpenSSL alone" column is
the bare ``cryptography`` operation on the same key: no DKIM implementation can beat it, so
it bounds the ratio this machine allows.

Then large messages (issue 15: "the 20 MiB message at least 30 verifications/s"): whole
verifications (parse + body hash + one RSA-2048 check, relaxed/relaxed, the key from an
in-memory ``ZoneResolver``) of a 20 MiB prose message and of a 20 MiB message that is
mostly a base64 attachment, per second, beside SHA-256 alone over the same octets (the
bound: no canonicalization can beat hashing), with the C accelerator of the body
canonicalization (``mailauth/dkim/_canon.c``) and with the pure-Python functions it
replaces. Each rate is the best and the median of N timed runs, the two implementations
alternating run by run, so both see this shared machine's drift alike; CPU time of this
process, not wall time, so other processes' load is mostly left out. A last part verifies a
50 MB message through the library API and reports the peak memory the verification
allocated (tracemalloc) beside the message size.

Run: python benchmarks/bench_dkim.py [--seconds 3] [--large-mib 20] [--runs 9] [--big-mb 50]
     [--large-only]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import dkim as dkimpy
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailauth.dkim import Signer, canon, public_key_record, verify_dkim
from mailauth.dkim.keys import PrivateKey, private_key_pem
from mailauth.dns import Resolver, RRType, ZoneResolver
from mailauth.message import Message
from mailauth.plan import run_plan
from mailauth.results import DkimResult
from tests.dnsserver import LoopbackDnsServer

DOMAIN = "bench.test"


PROSE = (
    b"Thanks for the notes from Tuesday. I went through the figures again this morning and\r\n"
    b"the numbers for the third quarter look right to me, apart from the travel line, which\r\n"
    b"still counts the October conference twice. Could you ask Dana to send the corrected\r\n"
    b"sheet before Friday? Once that is in, I will forward everything to the board.\r\n"
    b"\r\n"
)


def make_message(body_size: int) -> bytes:
    """A plain-text message: usual headers and prose paragraphs (about ``body_size`` bytes)."""
    head = (
        b"Received: from mail.bench.test (mail.bench.test [192.0.2.10])\r\n"
        b"\tby mx.example.org (Postfix) with ESMTPS id 4QxYz1abcd\r\n"
        b"\tfor <bob@example.org>; Sun, 29 Nov 2026 10:00:01 +0000 (UTC)\r\n"
        b"From: Alice Example <alice@bench.test>\r\nTo: Bob <bob@example.org>\r\n"
        b"Cc: Carol <carol@example.org>\r\nSubject: Re: third quarter figures\r\n"
        b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <20261129100000.4QxYz1abcd@bench.test>\r\n"
        b"In-Reply-To: <20261124160000.9AbCd@example.org>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return head + PROSE * (body_size // len(PROSE) + 1)


def make_attachment_message(body_size: int) -> bytes:
    """A short text part and a base64 attachment of about ``body_size`` bytes (76-column
    lines, as mail clients write them)."""
    head = (
        b"From: Alice Example <alice@bench.test>\r\nTo: Bob <bob@example.org>\r\n"
        b"Subject: the scans\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <20261129100000.5RyZa2bcde@bench.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe scans, as promised.\r\n\r\n"
        b"--b1\r\nContent-Type: application/pdf; name=scans.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    payload = random.Random(15).randbytes(body_size * 3 // 4)
    return head + base64.encodebytes(payload).replace(b"\n", b"\r\n") + b"--b1--\r\n"


def cpu_seconds(func: Callable[[], object]) -> float:
    started = time.process_time()
    func()
    return time.process_time() - started


def large_messages(mib: int, runs: int) -> None:
    """Verifications per second of large messages, with the C accelerator and without."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    record = public_key_record(key).encode()
    resolver = ZoneResolver({(f"big._domainkey.{DOMAIN}", RRType.TXT): (3600, (record,))})
    signer = Signer(DOMAIN, "big", key)
    native, now = canon.native, time.time()
    print(
        f"\n{mib} MiB messages, RSA-2048, relaxed/relaxed: verifications/s, best and median of "
        f"{runs} runs (CPU time)"
    )
    print(f"{'':24}{'C accelerator':>18}{'pure Python':>18}{'SHA-256 alone':>18}")
    for label, make in (("prose", make_message), ("base64 attachment", make_attachment_message)):
        signed = signer.sign(make(mib << 20))

        def verify(signed: bytes = signed) -> None:
            (outcome,) = run_plan(verify_dkim(Message.parse(signed), now=now), resolver)
            assert outcome.result is DkimResult.PASS

        def sha256_alone(signed: bytes = signed) -> bytes:
            return hashlib.sha256(signed).digest()

        times: dict[str, list[float]] = {"c": [], "python": [], "sha": []}
        for _ in range(runs):
            for impl in ("c", "python") if native is not None else ("python",):
                canon.native = native if impl == "c" else None
                times[impl].append(cpu_seconds(verify))
            times["sha"].append(cpu_seconds(sha256_alone))
        canon.native = native
        cells = [
            f"{1 / min(t):8.1f} {1 / statistics.median(t):7.1f}" if t else f"{'not built':>16}"
            for t in times.values()
        ]
        print(f"{label:24}" + "".join(f"{cell:>18}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--large-mib", type=int, default=20)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--big-mb", type=int, default=50)
    parser.add_argument("--large-only", action="store_true", help="only the large messages")
    args = parser.parse_args()
    if args.large_only:
        large_messages(args.large_mib, args.runs)
        return
    small_messages(args.seconds)
    large_messages(args.large_mib, args.runs)
    memory(args.big_mb)


def rate(func: Callable[[], object], seconds: float) -> float:
    """Calls per second over ``seconds``."""
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(5):
            func()
        count += 5
    return count / elapsed


def compare(
    ours: Callable[[], object], ref: Callable[[], object], seconds: float
) -> tuple[float, float]:
    """Rates of each from 15 alternating rounds, the median round of each. This VM's speed
    drifts by tens of per cent from one second to the next: alternating rounds let both sides
    see the same drift, the median drops the disturbed rounds. (Interleaving single calls
    would instead measure each side with caches the other side has just evicted.)"""
    ours(), ref()
    rounds = [(rate(ours, seconds / 15), rate(ref, seconds / 15)) for _ in range(15)]
    return statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds)


def dkimpy_key(key: PrivateKey) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return private_key_pem(key)
    return base64.b64encode(key.private_bytes_raw())


def bare_operations(
    key: PrivateKey, data: bytes
) -> tuple[Callable[[], object], Callable[[], object]]:
    """The public-key operation alone, as DKIM uses it, on ``data``."""
    if isinstance(key, rsa.RSAPrivateKey):
        pub = key.public_key()
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return (
            lambda: key.sign(data, padding.PKCS1v15(), hashes.SHA256()),
            lambda: pub.verify(sig, data, padding.PKCS1v15(), hashes.SHA256()),
        )
    digest = hashlib.sha256(data).digest()
    ed_pub, ed_sig = key.public_key(), key.sign(digest)
    return lambda: key.sign(digest), lambda: ed_pub.verify(ed_sig, digest)


def small_messages(seconds: float) -> None:
    """Signatures and verifications per second of a 5 KB message, mailauth beside dkimpy."""
    message = make_message(5000)
    keys: dict[str, PrivateKey] = {
        "rsa-sha256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ed25519-sha256": ed25519.Ed25519PrivateKey.generate(),
    }
    selectors = {"rsa-sha256": "rsa", "ed25519-sha256": "ed"}
    records = {f"{selectors[a]}._domainkey.{DOMAIN}": public_key_record(k) for a, k in keys.items()}
    zone = f"$ORIGIN {DOMAIN}.\n$TTL 3600\n@ IN SOA ns hostmaster 1 3600 600 86400 300\n"
    for name, text in records.items():
        strings = " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))
        zone += f"{name}. IN TXT {strings}\n"

    def dkimpy_dns(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip("."), "").encode()

    print(f"message: {len(message)} bytes, relaxed/relaxed, {seconds:g} s per measurement")
    print(f"{'':24}{'mailauth/s':>12}{'dkimpy/s':>12}{'ratio':>9}{'OpenSSL alone/s':>17}")
    now = time.time()
    with LoopbackDnsServer(zone) as server:
        resolver = Resolver([server.address], timeout=1, lifetime=2)
        for algorithm, key in keys.items():
            signer = Signer(DOMAIN, selectors[algorithm], key)
            pem = dkimpy_key(key)
            sel = selectors[algorithm].encode()

            def ours_sign(signer: Signer = signer) -> bytes:
                return signer.sign(message)

            def ref_sign(pem: bytes = pem, sel: bytes = sel, alg: str = algorithm) -> bytes:
                return bytes(
                    dkimpy.sign(
                        message,
                        sel,
                        DOMAIN.encode(),
                        pem,
                        canonicalize=(b"relaxed", b"relaxed"),
                        signature_algorithm=alg.encode(),
                    )
                )

            signed = signer.sign(message)

            def ours_verify(signed: bytes = signed) -> None:
                (outcome,) = run_plan(verify_dkim(Message.parse(signed), now=now), resolver)
                assert outcome.result is DkimResult.PASS

            def ref_verify(signed: bytes = signed) -> None:
                assert dkimpy.verify(signed, dnsfunc=dkimpy_dns)

            bare_sign, bare_verify = bare_operations(key, message)
            for label, ours, ref, bare in (
                (f"sign {algorithm}", ours_sign, ref_sign, bare_sign),
                (f"verify {algorithm}", ours_verify, ref_verify, bare_verify),
            ):
                mine, theirs = compare(ours, ref, seconds)
                ceiling = rate(bare, seconds / 4)
                print(
                    f"{label:24}{mine:12,.0f}{theirs:12,.0f}{mine / theirs:8.1f}x{ceiling:17,.0f}"
                )


def memory(big_mb: int) -> None:
    """The memory one verification of a ``big_mb`` MB message allocates beyond the message."""
    key = ed25519.Ed25519PrivateKey.generate()
    record = public_key_record(key).encode()
    resolver = ZoneResolver({(f"ed._domainkey.{DOMAIN}", RRType.TXT): (3600, (record,))})
    big = Signer(DOMAIN, "ed", key).sign(make_message(big_mb * 1_000_000))
    tracemalloc.start()
    started = time.perf_counter()
    (outcome,) = run_plan(verify_dkim(Message.parse(big), now=time.time()), resolver)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert outcome.result is DkimResult.PASS
    size = len(big)
    print(
        f"verify {size / 1e6:.0f} MB message: {elapsed:.2f} s, verification allocated at most "
        f"{peak / 1e6:.1f} MB; message + that = {(size + peak) / size:.2f}x the message size"
    )


if __name__ == "__main__":
    main()
