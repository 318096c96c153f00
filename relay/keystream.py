"""AES-256-CTR keystreams that can run on OpenSSL's AES-GCM code, sans-IO.

Theory of operation
-------------------
obfuscated2 encrypts with AES-256-CTR: keystream block ``i`` is ``AES_K(C0 + i)``, a 128-bit
big-endian counter that starts at the IV (PROTOCOLS.md "MTProto transport obfuscation"). On
CPUs with VAES, OpenSSL runs AES-GCM about twice as fast as AES-CTR, because only its GCM
code uses the wide AES instructions. GCM's encryption *is* counter mode (NIST SP 800-38D,
section 7.1): block ``i`` is XORed with ``AES_K(inc32^(i+1)(J0))``, where ``inc32`` adds one
to the low 32 bits only. So from any counter ``C`` until its low 32 bits wrap, GCM yields
CTR's keystream, provided that ``J0 = C - 1`` (in the low 32 bits).

GCM derives ``J0`` from the IV, and only a 96-bit IV sets it directly (with the counter at
1). For a 128-bit IV ``X`` (section 7.1, step 2), ``J0 = GHASH_H(X || 0^64 || [128]_64) =
X*H^2 + L*H`` in GF(2^128), where ``H = AES_K(0^128)`` and ``L`` is the length block. That is
linear in ``X``, so ``X = (J0 + L*H) * H^-2``: one inversion and three products of 128-bit
polynomials, about 60 microseconds in Python. A ``Keystream`` therefore starts on plain CTR
and moves to GCM only once a stream has carried ``switch_after`` bytes (bulk data, where one
pass over a 256 KiB read then costs about 20 microseconds instead of 40). It starts a new GCM
context, at the exact byte position, whenever the low 32 bits of the counter wrap (every
64 GiB at most) and well before OpenSSL's 64 GiB limit on one GCM message. The tag is never
computed.

Whether GCM pays depends on the CPU and the OpenSSL build, so the adapter measures it
(``relay.tuning.gcm_speedup``) and calls ``use_gcm``; until then every keystream is plain
CTR.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SWITCH_AFTER = 1 << 20
"""Bytes a stream carries on CTR before it moves to GCM: the move's cost is repaid in ~1 MiB."""
SEGMENT = 1 << 34
"""Most bytes one GCM context encrypts (OpenSSL refuses past 2^36 - 32)."""
_BLOCK = 16
_MASK = (1 << 128) - 1
_LOW32 = 0xFFFFFFFF
_FIELD = (1 << 128) | 0x87  # x^128 + x^7 + x^2 + x + 1, GCM's polynomial
_LENGTH_BLOCK = 128  # [0]_64 || [len(X) in bits]_64 for a 16-byte IV
_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
_NEVER = 1 << 62

_switch_after: int | None = None


def use_gcm(after: int | None = SWITCH_AFTER) -> int | None:
    """Let keystreams made from now on move to GCM after ``after`` bytes (None: never);
    returns the setting it replaces."""
    global _switch_after
    previous, _switch_after = _switch_after, after
    return previous


class Keystream:
    """An AES-256-CTR keystream with ``update``/``update_into`` like ``cryptography``'s
    contexts (encrypting and decrypting are the same XOR)."""

    __slots__ = ("_key", "_counter", "_pos", "_ctx", "_left", "_segment", "engine")

    def __init__(
        self,
        key: bytes,
        iv: bytes,
        *,
        switch_after: int | None = -1,
        segment: int = SEGMENT,
    ) -> None:
        """``switch_after``: -1 takes ``use_gcm``'s setting, None keeps CTR; ``segment`` is
        there for tests, to cross many GCM context boundaries in a few bytes."""
        self._key = key
        self._counter = int.from_bytes(iv, "big")
        self._pos = 0
        self._ctx: Any = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
        after = _switch_after if switch_after == -1 else switch_after
        self._segment = segment
        self.engine = "ctr"
        """The OpenSSL code producing the keystream now: ``ctr`` or ``gcm``."""
        self._left = _NEVER if after is None else after

    @property
    def position(self) -> int:
        """Bytes of keystream used so far."""
        return self._pos

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        out = bytearray(len(data) + _BLOCK - 1)
        size = self.update_into(data, out)
        return bytes(out[:size])

    def update_into(self, data: bytes | bytearray | memoryview, out: Any) -> int:
        """XOR ``data`` with the next ``len(data)`` keystream bytes into ``out``, which needs
        15 spare bytes (as ``cryptography`` asks); ``out`` may be ``data``'s own buffer."""
        size = len(data)
        if size <= self._left:  # the bulk path: one C call
            self._left -= size
            self._pos += size
            return int(self._ctx.update_into(data, out))
        view, target, done = memoryview(data).cast("B"), memoryview(out).cast("B"), 0
        while done < size:
            if not self._left:
                self._next_context()
            step = min(self._left, size - done)
            self._ctx.update_into(view[done : done + step], target[done:])
            self._left -= step
            self._pos += step
            done += step
        return size

    def _next_context(self) -> None:
        """Continue on GCM at the current position (the CTR part or a GCM segment is used up)."""
        blocks, skip = divmod(self._pos, _BLOCK)
        counter = (self._counter + blocks) & _MASK
        try:
            mode: Any = modes.GCM(gcm_iv(self._key, counter))
            self.engine = "gcm"
            self._left = min(((1 << 32) - (counter & _LOW32)) * _BLOCK - skip, self._segment)
        except ZeroDivisionError:  # AES_key(0) is 0: a 2^-128 chance, and CTR still works
            mode, self._left = modes.CTR(counter.to_bytes(_BLOCK, "big")), _NEVER
            self.engine = "ctr"
        self._ctx = Cipher(algorithms.AES(self._key), mode).encryptor()
        if skip:
            self._ctx.update(bytes(skip))  # into the middle of the block, as CTR is


def gcm_iv(key: bytes, counter: int) -> bytes:
    """The 16-byte GCM IV whose first keystream block is ``AES_key(counter)``."""
    zero = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(bytes(_BLOCK))
    h = _reflect(int.from_bytes(zero, "big"))
    j0 = (counter & ~_LOW32 & _MASK) | ((counter - 1) & _LOW32)
    x = _multiply(_reflect(j0) ^ _multiply(_reflect(_LENGTH_BLOCK), h), _inverse(_multiply(h, h)))
    return _reflect(x).to_bytes(_BLOCK, "big")


# GF(2^128) as GCM uses it: a block's first bit is the coefficient of x^0, so a block read as
# a big-endian integer is the polynomial with its bits reversed.


def _reflect(value: int) -> int:
    """Between a block (big-endian) and its polynomial (bit i = coefficient of x^i)."""
    return int.from_bytes(value.to_bytes(_BLOCK, "little").translate(_BIT_REVERSED), "big")


def _reduce(value: int) -> int:
    """``value`` (degree < 255) modulo GCM's polynomial, as x^128 = x^7 + x^2 + x + 1."""
    for _ in range(2):
        high = value >> 128
        value = (value & _MASK) ^ high ^ (high << 1) ^ (high << 2) ^ (high << 7)
    return value


def _multiply(a: int, b: int) -> int:
    """The product in GF(2^128): carry-less, four bits of ``b`` at a time."""
    table = [0] * 16
    for k in range(1, 16):
        table[k] = table[k ^ 1] ^ a if k & 1 else table[k >> 1] << 1
    product = 0
    for shift in range(124, -4, -4):
        product = (product << 4) ^ table[(b >> shift) & 15]
    return _reduce(product)


def _inverse(a: int) -> int:
    """The inverse in GF(2^128) of a nonzero ``a``, by the extended Euclidean algorithm."""
    if not a:
        raise ZeroDivisionError("0 has no inverse in GF(2^128)")
    u, v, g1, g2 = a, _FIELD, 1, 0
    while u != 1:
        shift = u.bit_length() - v.bit_length()
        if shift < 0:
            u, v, g1, g2, shift = v, u, g2, g1, -shift
        u ^= v << shift
        g1 ^= g2 << shift
    return g1
