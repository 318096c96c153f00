"""Signed links against raw Ed25519, measured in one run.

For N distinct proxy links it times, in alternating rounds (A B A B, DESIGN.md §10):
- sign: a proxy (``Link``, as the publisher holds it) in, signed URL text out
  (``sign_link(...).url()``), against ``Ed25519PrivateKey.sign`` of the very same signed
  messages; ``sign_from_text_ratio`` also counts parsing the unsigned URL text first;
- verify: signed URL text in, verdict out (``verify_link``), against
  ``Ed25519PublicKey.verify`` of the same signatures and messages.
CPU time of this process is used, not wall time. It prints ``name: value`` lines; the ratios
are kopir's rate divided by raw Ed25519's rate (1.0 = no overhead; the target is >= 0.8).

    python bench/sign_bench.py [--links 1000] [--rounds 21]
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
from collections.abc import Callable

from signing.link import parse_link, sign_link, verify_link
from signing.minisign import SecretKey
from signing.trust import TrustKey, TrustRoot


def cpu(fn: Callable[[], None]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--links", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()

    key = SecretKey.generate()
    trust = TrustRoot(
        1, "2099-01-01T00:00:00Z",
        (TrustKey("bench", key.public_key, frozenset({"root", "lists", "links"})),),
        {"root": 1, "lists": 1, "links": 1, "log": 1},
    )  # fmt: skip
    expires, now = time.time() + 72 * 3600, time.time()
    urls = [
        f"tg://proxy?server=relay{i}.example.org&port={443 + i % 7}"
        f"&secret=ee{i:032x}{b'www.example.com'.hex()}"
        for i in range(args.links)
    ]
    proxies = [parse_link(u) for u in urls]
    signed = [sign_link(u, key, expires).url() for u in urls]
    links = [parse_link(s) for s in signed]
    messages = [link.message() for link in links]
    sigs = [base64.urlsafe_b64decode((link.sig or "") + "==") for link in links]
    signer, verifier = key.signer, key.public_key.verifier

    def kopir_sign() -> None:
        for proxy in proxies:
            sign_link(proxy, key, expires).url()

    def kopir_sign_text() -> None:
        for u in urls:
            sign_link(u, key, expires).url()

    def raw_sign() -> None:
        for m in messages:
            signer.sign(m)

    def kopir_verify() -> None:
        for s in signed:
            verify_link(s, trust, now)

    def raw_verify() -> None:
        for sig, m in zip(sigs, messages, strict=True):
            verifier.verify(sig, m)

    times: dict[str, list[float]] = {"ks": [], "rs": [], "kt": [], "kv": [], "rv": []}
    for _ in range(args.rounds):  # alternate so drift hits both sides alike
        times["ks"].append(cpu(kopir_sign))
        times["rs"].append(cpu(raw_sign))
        times["kt"].append(cpu(kopir_sign_text))
        times["kv"].append(cpu(kopir_verify))
        times["rv"].append(cpu(raw_verify))
    rate = {k: args.links / statistics.median(v) for k, v in times.items()}
    sign_ratios = [r / k for k, r in zip(times["ks"], times["rs"], strict=True)]
    text_ratios = [r / k for k, r in zip(times["kt"], times["rs"], strict=True)]
    verify_ratios = [r / k for k, r in zip(times["kv"], times["rv"], strict=True)]
    print(f"links: {args.links}")
    print(f"rounds: {args.rounds}")
    print(f"link_signs_per_s: {rate['ks']:.0f}")
    print(f"raw_ed25519_signs_per_s: {rate['rs']:.0f}")
    print(f"sign_ratio: {statistics.median(sign_ratios):.3f}")
    print(f"link_signs_from_text_per_s: {rate['kt']:.0f}")
    print(f"sign_from_text_ratio: {statistics.median(text_ratios):.3f}")
    print(f"link_verifies_per_s: {rate['kv']:.0f}")
    print(f"raw_ed25519_verifies_per_s: {rate['rv']:.0f}")
    print(f"verify_ratio: {statistics.median(verify_ratios):.3f}")


if __name__ == "__main__":
    main()
