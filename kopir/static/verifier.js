/* kopir offline verifier: checks signed Telegram proxy links with no network at all.

Theory of operation
-------------------
The page carries the publisher's trust root (trust.json, DESIGN.md §5.5) in a JSON data block.
The citizen pastes an SMS or a link; every proxy link in the text is parsed exactly as
signing/link.py parses it (DESIGN.md §5.2: the same strictness, the same canonical secret, the
same messages), then verified in the same order: a key listed for "links", not revoked, a valid
Ed25519 signature over "kopir-link-v1\n<type>\n<server>\n<port>\n<secret>\n<exp>\n<kid>\n", and
the expiry hour still ahead on this device's clock.

Ed25519 runs in WebCrypto where the browser has it. Otherwise the fallback below verifies per
RFC 8032 §5.1.7 with BigInt arithmetic on edwards25519 and its own SHA-512 (FIPS 180-4): S must
be below L, both points must decode canonically, and [S]B - [k]A must encode to R.

URL flags (after #, like #lang=ru&engine=js): lang=kk|ru|en chooses the language (else the
browser's), engine=js forces the fallback. window.kopirVerifier exposes the pieces for tests.
*/
"use strict";

(function () {
  // -- bytes --------------------------------------------------------------------------------

  const UTF8 = new TextEncoder();
  const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  const B64_CORE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const B64URL = B64_CORE + "-_";
  const B64STD = B64_CORE + "+/";

  function concatBytes(...parts) {
    const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
    let offset = 0;
    for (const part of parts) {
      out.set(part, offset);
      offset += part.length;
    }
    return out;
  }

  function toHex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function fromHex(text) {
    const out = new Uint8Array(text.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
    return out;
  }

  // Base64 data characters (no padding) as Python decodes them: leftover bits are dropped,
  // and one character past a whole group is an error (null).
  function decodeBase64(data, alphabet) {
    if (data.length % 4 === 1) return null;
    const out = [];
    let acc = 0;
    let bits = 0;
    for (const ch of data) {
      const value = alphabet.indexOf(ch);
      if (value < 0) return null;
      acc = (acc << 6) | value;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out.push((acc >> bits) & 0xff);
      }
      acc &= (1 << bits) - 1;
    }
    return Uint8Array.from(out);
  }

  function encodeBase64Url(bytes) {
    let out = "";
    let acc = 0;
    let bits = 0;
    for (const byte of bytes) {
      acc = (acc << 8) | byte;
      bits += 8;
      while (bits >= 6) {
        bits -= 6;
        out += B64URL[(acc >> bits) & 63];
      }
      acc &= (1 << bits) - 1;
    }
    return bits ? out + B64URL[(acc << (6 - bits)) & 63] : out;
  }

  function numberFromLE(bytes) {
    let n = 0n;
    for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]);
    return n;
  }

  function numberToLE(n, length) {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++, n >>= 8n) out[i] = Number(n & 0xffn);
    return out;
  }

  // -- SHA-512 (FIPS 180-4 §6.4) ------------------------------------------------------------

  const MASK64 = (1n << 64n) - 1n;

  // floor(n ** (1/k)) by Newton's method from above.
  function integerRoot(n, k) {
    let x = 1n << BigInt(Math.ceil(n.toString(2).length / Number(k)));
    for (;;) {
      const y = ((k - 1n) * x + n / x ** (k - 1n)) / k;
      if (y >= x) return x;
      x = y;
    }
  }

  function firstPrimes(count) {
    const primes = [];
    for (let n = 2; primes.length < count; n++) {
      if (primes.every((p) => n % p !== 0)) primes.push(n);
    }
    return primes;
  }

  // §4.2.3 and §5.3.5: the first 64 bits of the fractional parts of the cube roots of the
  // first 80 primes (K) and of the square roots of the first 8 (the initial hash value).
  const PRIMES = firstPrimes(80);
  const K512 = PRIMES.map((p) => integerRoot(BigInt(p) << 192n, 3n) & MASK64);
  const IV512 = PRIMES.slice(0, 8).map((p) => integerRoot(BigInt(p) << 128n, 2n) & MASK64);

  const rotr = (x, n) => ((x >> n) | (x << (64n - n))) & MASK64;

  function sha512Block(h, view, offset, w) {
    for (let t = 0; t < 16; t++) w[t] = view.getBigUint64(offset + 8 * t);
    for (let t = 16; t < 80; t++) {
      const s0 = rotr(w[t - 15], 1n) ^ rotr(w[t - 15], 8n) ^ (w[t - 15] >> 7n);
      const s1 = rotr(w[t - 2], 19n) ^ rotr(w[t - 2], 61n) ^ (w[t - 2] >> 6n);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) & MASK64;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let t = 0; t < 80; t++) {
      const sum1 = rotr(e, 14n) ^ rotr(e, 18n) ^ rotr(e, 41n);
      const t1 = hh + sum1 + ((e & f) ^ (~e & g)) + K512[t] + w[t];
      const sum0 = rotr(a, 28n) ^ rotr(a, 34n) ^ rotr(a, 39n);
      const t2 = sum0 + ((a & b) ^ (a & c) ^ (b & c));
      [hh, g, f, e, d, c, b, a] = [g, f, e, (d + t1) & MASK64, c, b, a, (t1 + t2) & MASK64];
    }
    [a, b, c, d, e, f, g, hh].forEach((v, i) => (h[i] = (h[i] + v) & MASK64));
  }

  function sha512(message) {
    const padded = new Uint8Array(Math.ceil((message.length + 17) / 128) * 128);
    padded.set(message);
    padded[message.length] = 0x80;
    const view = new DataView(padded.buffer);
    view.setBigUint64(padded.length - 8, BigInt(message.length) * 8n);
    const h = IV512.slice();
    const w = new Array(80);
    for (let offset = 0; offset < padded.length; offset += 128) sha512Block(h, view, offset, w);
    const out = new Uint8Array(64);
    const outView = new DataView(out.buffer);
    h.forEach((v, i) => outView.setBigUint64(8 * i, v));
    return out;
  }

  // -- Ed25519 (RFC 8032 §5.1) --------------------------------------------------------------

  const P = (1n << 255n) - 19n;
  const L = (1n << 252n) + 27742317777372353535851937790883648493n;

  function mod(a, m = P) {
    const r = a % m;
    return r < 0n ? r + m : r;
  }

  function power(base, exponent) {
    let result = 1n;
    base = mod(base);
    for (; exponent > 0n; exponent >>= 1n) {
      if (exponent & 1n) result = (result * base) % P;
      base = (base * base) % P;
    }
    return result;
  }

  const invert = (x) => power(x, P - 2n);
  const D = mod(-121665n * invert(121666n));
  const SQRT_M1 = power(2n, (P - 1n) / 4n);
  const IDENTITY = { x: 0n, y: 1n, z: 1n, t: 0n };

  // §5.1.3: null unless the 32 bytes are the canonical encoding of a point on the curve.
  function decodePoint(bytes) {
    if (bytes.length !== 32) return null;
    const sign = bytes[31] >> 7;
    const y = numberFromLE(bytes) & ((1n << 255n) - 1n);
    if (y >= P) return null;
    const u = mod(y * y - 1n);
    const v = mod(D * y * y + 1n);
    let x = mod(u * power(v, 3n) * power(u * power(v, 7n), (P - 5n) / 8n));
    const vxx = mod(v * x * x);
    if (vxx !== u) {
      if (vxx !== mod(-u)) return null;
      x = mod(x * SQRT_M1);
    }
    if (x === 0n && sign === 1) return null;
    if (Number(x & 1n) !== sign) x = P - x;
    return { x, y, z: 1n, t: mod(x * y) };
  }

  function encodePoint(point) {
    const zInv = invert(point.z);
    const x = mod(point.x * zInv);
    const y = mod(point.y * zInv);
    const out = numberToLE(y, 32);
    out[31] |= Number(x & 1n) << 7;
    return out;
  }

  // §5.1.4: addition in extended coordinates (complete: it also doubles and adds the identity).
  function addPoints(p, q) {
    const a = mod((p.y - p.x) * (q.y - q.x));
    const b = mod((p.y + p.x) * (q.y + q.x));
    const c = mod(2n * D * p.t * q.t);
    const d = mod(2n * p.z * q.z);
    const [e, f, g, h] = [b - a, d - c, d + c, b + a];
    return { x: mod(e * f), y: mod(g * h), z: mod(f * g), t: mod(e * h) };
  }

  function doublePoint(p) {
    const a = mod(p.x * p.x);
    const b = mod(p.y * p.y);
    const c = mod(2n * p.z * p.z);
    const h = a + b;
    const e = h - mod((p.x + p.y) * (p.x + p.y));
    const g = a - b;
    const f = c + g;
    return { x: mod(e * f), y: mod(g * h), z: mod(f * g), t: mod(e * h) };
  }

  const negate = (p) => ({ x: mod(-p.x), y: p.y, z: p.z, t: mod(-p.t) });
  const BASE = decodePoint(numberToLE(mod(4n * invert(5n)), 32));

  // [s]p + [k]q with one doubling per bit for both (Straus-Shamir).
  function doubleScalarMultiply(s, p, k, q) {
    const both = addPoints(p, q);
    let acc = IDENTITY;
    for (let bit = 255n; bit >= 0n; bit--) {
      acc = doublePoint(acc);
      const sBit = (s >> bit) & 1n;
      const kBit = (k >> bit) & 1n;
      if (sBit && kBit) acc = addPoints(acc, both);
      else if (sBit) acc = addPoints(acc, p);
      else if (kBit) acc = addPoints(acc, q);
    }
    return acc;
  }

  // §5.1.7, cofactorless like BoringSSL and OpenSSL: [S]B - [k]A must encode to R's bytes.
  function ed25519Verify(publicKey, signature, message) {
    if (publicKey.length !== 32 || signature.length !== 64) return false;
    const rBytes = signature.subarray(0, 32);
    const a = decodePoint(publicKey);
    const r = decodePoint(rBytes);
    const s = numberFromLE(signature.subarray(32));
    if (a === null || r === null || s >= L) return false;
    const k = mod(numberFromLE(sha512(concatBytes(rBytes, publicKey, message))), L);
    const check = encodePoint(doubleScalarMultiply(s, BASE, k, negate(a)));
    return check.every((byte, i) => byte === rBytes[i]);
  }

  // -- verification engines -----------------------------------------------------------------

  const JS_ENGINE = {
    name: "js",
    verify: async (publicKey, signature, message) => ed25519Verify(publicKey, signature, message),
  };

  async function webCryptoEngine() {
    const subtle = globalThis.crypto && globalThis.crypto.subtle;
    if (!subtle) return null;
    const algorithm = { name: "Ed25519" };
    try {
      await subtle.importKey("raw", encodePoint(BASE), algorithm, false, ["verify"]);
    } catch (error) {
      return null; // no Ed25519 in this browser's WebCrypto
    }
    const imported = new Map();
    async function verify(publicKey, signature, message) {
      const id = toHex(publicKey);
      if (!imported.has(id)) {
        const key = subtle.importKey("raw", publicKey, algorithm, false, ["verify"]);
        imported.set(
          id,
          key.catch(() => null),
        );
      }
      const key = await imported.get(id);
      if (key === null) return ed25519Verify(publicKey, signature, message);
      return subtle.verify(algorithm, key, signature, message);
    }
    return { name: "webcrypto", verify };
  }

  async function chooseEngine(forceJs) {
    return (!forceJs && (await webCryptoEngine())) || JS_ENGINE;
  }

  // -- link parsing: a port of signing/link.py ----------------------------------------------

  const MAX_LINK_LENGTH = 2048;
  const PREFIXES = new Map(
    ["https://t.me/", "https://telegram.me/", "https://telegram.dog/", "tg://"].flatMap((base) => [
      [base + "proxy?", "proxy"],
      [base + "socks?", "socks"],
    ]),
  );
  const PROXY_PARAMS = new Set(["server", "port", "secret", "kid", "exp", "sig"]);
  const SOCKS_PARAMS = new Set(["server", "port", "user", "pass", "kid", "exp", "sig"]);
  const LABEL = "[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?";
  const HOSTNAME = new RegExp(`^${LABEL}(?:\\.${LABEL})*\\.?$`);
  const DOMAIN_BYTES = new Set(
    Array.from("abcdefghijklmnopqrstuvwxyz0123456789.-", (c) => c.charCodeAt(0)),
  );
  // Python's str.strip() white space.
  const PY_SPACE =
    "[\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
  const PY_STRIP = new RegExp(`^${PY_SPACE}+|${PY_SPACE}+$`, "g");
  const LINK_PATTERN =
    /(?:https?:\/\/(?:t\.me|telegram\.me|telegram\.dog)\/(?:proxy|socks)|tg:\/\/(?:proxy|socks))\?[A-Za-z0-9\u0130\u0131\-._~%&=:\[\]+\/]+/giu;

  class Malformed extends Error {
    constructor(code, arg = "") {
      super(code);
      this.code = code;
      this.arg = arg;
    }
  }

  // Python's repr() of an ASCII string, so messages read exactly as the Python ones.
  function pyRepr(text) {
    const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
    const escapes = { "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", [quote]: "\\" + quote };
    let out = quote;
    for (const ch of text) {
      const code = ch.charCodeAt(0);
      if (ch in escapes) out += escapes[ch];
      else if (code < 0x20 || code === 0x7f) out += "\\x" + code.toString(16).padStart(2, "0");
      else out += ch;
    }
    return out + quote;
  }

  // Python's urllib.parse.unquote(errors="strict") on ASCII text: %XX becomes a byte, a
  // stray % stays, and the bytes must be UTF-8.
  function unquote(value) {
    const bytes = [];
    const pushText = (text) => bytes.push(...Array.from(text, (ch) => ch.charCodeAt(0)));
    const [first, ...rest] = value.split("%");
    pushText(first);
    for (const item of rest) {
      if (/^[0-9A-Fa-f]{2}/.test(item)) {
        bytes.push(parseInt(item.slice(0, 2), 16));
        pushText(item.slice(2));
      } else {
        bytes.push(0x25);
        pushText(item);
      }
    }
    try {
      return STRICT_UTF8.decode(Uint8Array.from(bytes));
    } catch (error) {
      throw new Malformed("bad-percent");
    }
  }

  function parseQuery(url) {
    if (Array.from(url).length > MAX_LINK_LENGTH) throw new Malformed("too-long");
    if (!/^[\x00-\x7f]*$/.test(url)) throw new Malformed("not-ascii");
    const cut = url.indexOf("?");
    const kind = cut < 0 ? undefined : PREFIXES.get(url.slice(0, cut).toLowerCase() + "?");
    if (kind === undefined) throw new Malformed("not-proxy");
    const query = url.slice(cut + 1);
    if (query.includes("#")) throw new Malformed("fragment");
    const params = new Map();
    for (const item of query.split("&")) {
      const eq = item.indexOf("=");
      const name = (eq < 0 ? item : item.slice(0, eq)).toLowerCase();
      if (eq < 0 || !name) throw new Malformed("no-value", pyRepr(item.slice(0, 20)));
      if (params.has(name)) throw new Malformed("duplicate", pyRepr(name));
      const value = item.slice(eq + 1);
      params.set(name, value.includes("%") ? unquote(value) : value);
    }
    const allowed = kind === "proxy" ? PROXY_PARAMS : SOCKS_PARAMS;
    const unknown = [...params.keys()].filter((name) => !allowed.has(name)).sort();
    if (unknown.length) throw new Malformed("unknown-param", pyRepr(unknown[0].slice(0, 20)));
    return [kind, params];
  }

  function parseOctet(text) {
    return /^[0-9]{1,3}$/.test(text) && (text === "0" || text[0] !== "0") && Number(text) <= 255;
  }

  // Python's ipaddress.IPv6Address() acceptance, scope id and IPv4 tail included.
  function isIPv6(text) {
    if (text.includes("/")) return false;
    let address = text;
    const percent = text.indexOf("%");
    if (percent >= 0) {
      const scope = text.slice(percent + 1);
      if (!scope || scope.includes("%")) return false;
      address = text.slice(0, percent);
    }
    const parts = address.split(":");
    if (!address || parts.length < 3) return false;
    if (parts[parts.length - 1].includes(".")) {
      const octets = parts.pop().split(".");
      if (octets.length !== 4 || !octets.every(parseOctet)) return false;
      parts.push("0", "0");
    }
    return parts.length <= 9 && hextetsFit(parts);
  }

  function hextetsFit(parts) {
    let skip = -1;
    for (let i = 1; i < parts.length - 1; i++) {
      if (parts[i]) continue;
      if (skip >= 0) return false;
      skip = i;
    }
    let hi = parts.length;
    let lo = 0;
    if (skip >= 0) {
      hi = skip;
      lo = parts.length - skip - 1;
      if (!parts[0] && --hi) return false;
      if (!parts[parts.length - 1] && --lo) return false;
      if (8 - (hi + lo) < 1) return false;
    } else if (parts.length !== 8 || !parts[0] || !parts[7]) {
      return false;
    }
    const used = [...parts.slice(0, hi), ...parts.slice(parts.length - lo)];
    return used.every((hextet) => /^[0-9a-fA-F]{1,4}$/.test(hextet));
  }

  function parseServer(value) {
    if (!value) throw new Malformed("no-server");
    const server = value.toLowerCase();
    if (server.length <= 253 && HOSTNAME.test(server)) return server;
    const bracketed = server.startsWith("[") && server.endsWith("]");
    if (!isIPv6(bracketed ? server.slice(1, -1) : server)) throw new Malformed("bad-server");
    return server;
  }

  function parsePort(value) {
    if (!value || value.length > 5 || !/^[0-9]+$/.test(value)) throw new Malformed("port-digits");
    const port = Number(value);
    if (port < 1 || port > 65535 || String(port) !== value) throw new Malformed("port-range");
    return port;
  }

  function checkSecret(raw) {
    if (raw.length === 16 || (raw.length === 17 && raw[0] === 0xdd)) return;
    if (raw.length > 17 && raw[0] === 0xee) {
      const domain = Array.from(raw.subarray(17), (b) => (b >= 0x41 && b <= 0x5a ? b + 32 : b));
      if (domain.length <= 253 && domain.every((b) => DOMAIN_BYTES.has(b))) return;
      throw new Malformed("fake-tls-domain");
    }
    throw new Malformed("secret-kind");
  }

  function decodeSecret(value) {
    if (!value) throw new Malformed("no-secret");
    let raw;
    if (value.length % 2 === 0 && /^[0-9a-fA-F]*$/.test(value)) {
      raw = fromHex(value);
    } else {
      const data = value.replace(/=+$/, "");
      raw = /^[A-Za-z0-9_-]*$/.test(data) ? decodeBase64(data, B64URL) : null;
      if (raw === null) throw new Malformed("secret-encoding");
    }
    checkSecret(raw);
    return raw;
  }

  // The secret in canonical lower-case hex, whichever encoding the link used.
  function secretHex(value) {
    if (value && /^(?:[0-9a-f]{2})+$/.test(value)) {
      checkSecret(fromHex(value));
      return value;
    }
    return toHex(decodeSecret(value));
  }

  function socksAuth(params) {
    const user = params.get("user");
    const pass = params.get("pass");
    if (user === undefined && pass === undefined) return "";
    if (user === undefined || pass === undefined) throw new Malformed("socks-pair");
    if (user.includes(":") || user.includes("\n") || pass.includes("\n")) {
      throw new Malformed("socks-user");
    }
    return `${user}:${pass}`;
  }

  function expTime(exp) {
    if (!/^[0-9]{10}$/.test(exp)) throw new Malformed("exp-format");
    const [year, month, day, hour] = [
      exp.slice(0, 4),
      exp.slice(4, 6),
      exp.slice(6, 8),
      exp.slice(8),
    ].map(Number);
    const monthOk = month >= 1 && month <= 12;
    const days = monthOk ? new Date(Date.UTC(year, month, 0)).getUTCDate() : 0;
    if (year < 1970 || !monthOk || day < 1 || day > days || hour >= 24) {
      throw new Malformed("exp-date");
    }
    return Date.UTC(year, month - 1, day, hour) / 1000;
  }

  function checkSignedFields(link) {
    const b64url = /^[A-Za-z0-9_-]*$/;
    if (
      link.kid.length !== 11 ||
      !"AEIMQUYcgkosw048".includes(link.kid[10]) ||
      !b64url.test(link.kid)
    ) {
      throw new Malformed("kid");
    }
    if (link.sig.length !== 86 || !"AQgw".includes(link.sig[85]) || !b64url.test(link.sig)) {
      throw new Malformed("sig");
    }
    expTime(link.exp);
  }

  function parseLink(text) {
    const [type, params] = parseQuery(text.replace(PY_STRIP, ""));
    const server = parseServer(params.get("server"));
    const port = parsePort(params.get("port"));
    const secret = type === "proxy" ? secretHex(params.get("secret")) : socksAuth(params);
    const [kid, exp, sig] = ["kid", "exp", "sig"].map((name) => params.get(name));
    const link = { type, server, port, secret, kid, exp, sig };
    if (kid === undefined && exp === undefined && sig === undefined) return link;
    if (kid === undefined || exp === undefined || sig === undefined) {
      throw new Malformed("partly-signed");
    }
    checkSignedFields(link);
    return link;
  }

  function linkMessage(link) {
    const { type, server, port, secret, exp, kid } = link;
    return UTF8.encode(`kopir-link-v1\n${type}\n${server}\n${port}\n${secret}\n${exp}\n${kid}\n`);
  }

  // Python's urllib.parse.quote(text, safe="").
  function pyQuote(text) {
    return Array.from(UTF8.encode(text), (b) => {
      const ch = String.fromCharCode(b);
      return /[A-Za-z0-9_.~-]/.test(ch) ? ch : "%" + b.toString(16).toUpperCase().padStart(2, "0");
    }).join("");
  }

  // Link.url("tg"): what the "Open in Telegram" button opens.
  function telegramUrl(link) {
    let url = `tg://${link.type}?server=${link.server}&port=${link.port}`;
    if (link.type === "proxy") {
      url += `&secret=${link.secret}`;
    } else if (link.secret) {
      const cut = link.secret.indexOf(":");
      const [user, pass] = [link.secret.slice(0, cut), link.secret.slice(cut + 1)];
      url += `&user=${pyQuote(user)}&pass=${pyQuote(pass)}`;
    }
    return link.sig === undefined ? url : `${url}&kid=${link.kid}&exp=${link.exp}&sig=${link.sig}`;
  }

  // Every proxy link in free text, as kopir.signcmd.find_links finds them. Python's
  // IGNORECASE lets [A-Za-z] match U+0130, U+0131, U+017F and U+212A: the "u" flag's case
  // folding covers the last two, the class names the first two.
  function findLinks(text) {
    return Array.from(text.matchAll(LINK_PATTERN), (m) => m[0].replace(/[.,;:!?)\]'"]+$/, ""));
  }

  // -- the trust root and verification ------------------------------------------------------

  function rfc3339Time(text) {
    const m = /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z$/.exec(text);
    const [year, month, day, hour, minute, second] = m.slice(1).map(Number);
    return Date.UTC(year, month - 1, day, hour, minute, second) / 1000;
  }

  // The key id as minisign prints it: the little-endian uint64 in upper-case hex.
  const keyIdHex = (id) => numberFromLE(id).toString(16).toUpperCase();

  function loadTrust(root) {
    const keys = root.keys.map((entry) => {
      const raw = decodeBase64(entry.key.replace(/=+$/, ""), B64STD);
      const id = raw.subarray(2, 10);
      return {
        name: entry.name,
        hexId: keyIdHex(id),
        kid: encodeBase64Url(id),
        publicKey: raw.subarray(10, 42),
        roles: entry.roles,
        revoked: entry.revoked === null ? null : rfc3339Time(entry.revoked),
        revokedText: entry.revoked,
      };
    });
    const linkKeys = new Map(keys.filter((k) => k.roles.includes("links")).map((k) => [k.kid, k]));
    return {
      version: root.version,
      expires: root.expires,
      expiresAt: rfc3339Time(root.expires),
      keys,
      linkKeys,
    };
  }

  // One link's verdict, in signing.verify_link's order. `now` is Unix seconds.
  async function verifyLink(text, trust, now, engine) {
    let link;
    try {
      link = parseLink(text);
      if (link.sig === undefined) throw new Malformed("unsigned");
    } catch (error) {
      if (!(error instanceof Malformed)) throw error;
      return { reason: "malformed", code: error.code, arg: error.arg, text, link };
    }
    const key = trust.linkKeys.get(link.kid);
    const kidHex = keyIdHex(decodeBase64(link.kid, B64URL));
    const result = { text, link, key, kidHex, expires: expTime(link.exp) };
    if (key === undefined) return { ...result, reason: "unknown-key" };
    if (key.revoked !== null && now >= key.revoked) return { ...result, reason: "revoked-key" };
    const signature = decodeBase64(link.sig, B64URL);
    if (!(await engine.verify(key.publicKey, signature, linkMessage(link)))) {
      return { ...result, reason: "bad-signature" };
    }
    if (now >= result.expires) return { ...result, reason: "expired" };
    return { ...result, reason: "valid", open: telegramUrl(link) };
  }

  globalThis.kopirVerifier = {
    sha512,
    ed25519Verify,
    decodePoint,
    chooseEngine,
    parseLink,
    findLinks,
    loadTrust,
    verifyLink,
    telegramUrl,
    Malformed,
  };
})();
