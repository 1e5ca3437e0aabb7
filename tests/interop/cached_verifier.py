"""A strict, well-behaved JWT verifier that caches the JWKS, run against auth-jit.

Usage: cached_verifier.py ISSUER_BASE_URLS CLIENT_ID CLIENT_SECRET AUDIENCE ISSUER DURATION_SECS

ISSUER_BASE_URLS is a comma-separated list of instance base URLs. For
DURATION_SECS it loops: asks the next instance (round-robin) for a token
(POST {base}/api/token, HTTP Basic, {"audience": AUDIENCE, "ttl": 2}) and
verifies it with PyJWT against the JWKS of the first instance
({first base}/.well-known/jwks.json).

The caching rule is the strict one: the JWKS is fetched again only once the
cached copy is older than the `max-age` of its Cache-Control header (less
any `Age`), and never earlier, not even for a token whose kid is unknown.
A refetch sends If-None-Match with the previous ETag; a 304 keeps the cached
keys and restarts their age. So every token issued must be signed by a key
that was already published when the verifier last fetched the JWKS.

Prints one JSON line: {"issued", "verified", "failed", "fetches",
"not_modified", "kids_seen", "failures"} (failures: the first 5 error
strings) and exits 0 if nothing failed and at least one token was issued,
1 otherwise.
"""
from __future__ import annotations

import json
import re
import sys
import time

import jwt
import requests

ALGORITHMS = ["EdDSA", "ES256", "RS256", "PS256"]
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]
TOKEN_TTL = 2
PAUSE_SECS = 0.05
HTTP_TIMEOUT_SECS = 5
MAX_AGE_RE = re.compile(r'(?:^|[,\s])max-age\s*=\s*"?(\d+)"?', re.IGNORECASE)


def max_age(headers) -> int:
    """Freshness lifetime from Cache-Control: max-age (0 when absent, or
    with no-cache / no-store), less the Age the response already has."""
    control = headers.get("Cache-Control", "")
    if re.search(r"\bno-(?:cache|store)\b", control, re.IGNORECASE):
        return 0
    m = MAX_AGE_RE.search(control)
    lifetime = int(m.group(1)) if m else 0
    try:
        age = int(headers.get("Age", "0"))
    except ValueError:
        age = 0
    return max(0, lifetime - max(0, age))


class CachedJwks:
    def __init__(self, url: str):
        self.url = url
        self.session = requests.Session()
        self.keys: dict[str | None, jwt.PyJWK] | None = None
        self.fetched_at = 0.0
        self.lifetime = 0
        self.etag: str | None = None
        self.fetches = 0
        self.not_modified = 0

    def age(self) -> float:
        return time.monotonic() - self.fetched_at

    def stale(self) -> bool:
        return self.keys is None or self.age() > self.lifetime

    def refresh_if_stale(self) -> None:
        """Fetches only when the cached copy has outlived its max-age.
        Raises RuntimeError when a needed fetch fails (the stale copy is
        kept and the next call tries again)."""
        if not self.stale():
            return
        headers = {"Accept": "application/json"}
        if self.etag and self.keys is not None:
            headers["If-None-Match"] = self.etag
        self.fetches += 1
        try:
            response = self.session.get(self.url, headers=headers, timeout=HTTP_TIMEOUT_SECS)
        except requests.RequestException as e:
            raise RuntimeError(f"jwks {self.url}: {type(e).__name__}: {e}") from None
        if response.status_code == 304 and self.keys is not None:
            self.not_modified += 1
            self.fetched_at = time.monotonic()
            # A 304 carries the current caching headers (RFC 9111 section 4.3.4).
            if "Cache-Control" in response.headers:
                self.lifetime = max_age(response.headers)
            self.etag = response.headers.get("ETag", self.etag)
            return
        if response.status_code != 200:
            raise RuntimeError(f"jwks {self.url}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            document = response.json()
            keys = {}
            for jwk in document.get("keys", []):
                if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                    continue
                try:
                    key = jwt.PyJWK(jwk)
                except jwt.PyJWTError:
                    continue  # a key type this verifier cannot use
                keys[key.key_id] = key
        except (ValueError, AttributeError) as e:
            raise RuntimeError(f"jwks {self.url}: not a JWK Set: {e}") from None
        if not keys:
            raise RuntimeError(f"jwks {self.url}: no usable signing keys")
        self.keys = keys
        self.fetched_at = time.monotonic()
        self.lifetime = max_age(response.headers)
        self.etag = response.headers.get("ETag")

    def verify(self, token: str, audience: str, issuer: str) -> str:
        """Verifies `token` with the cached keys; returns its kid."""
        self.refresh_if_stale()
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "at+jwt":
            raise jwt.InvalidTokenError(f"typ is {header.get('typ')!r}, not 'at+jwt'")
        kid = header.get("kid")
        key = (self.keys or {}).get(kid)
        if key is None:
            # Strict: no early refetch, even for an unknown kid.
            raise jwt.InvalidTokenError(
                f"kid {kid!r} not in the cached JWKS (kids {sorted(map(str, self.keys or {}))}, "
                f"cached {self.age():.1f} s ago, max-age {self.lifetime} s)"
            )
        jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            audience=audience,
            issuer=issuer,
            options={"require": REQUIRED_CLAIMS},
        )
        return kid


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    bases_arg, client_id, client_secret, audience, issuer, duration_arg = argv
    bases = [b.strip().rstrip("/") for b in bases_arg.split(",") if b.strip()]
    try:
        duration = float(duration_arg)
    except ValueError:
        print(f"DURATION_SECS {duration_arg!r} is not a number", file=sys.stderr)
        return 2
    if not bases:
        print("no base URL given", file=sys.stderr)
        return 2

    jwks = CachedJwks(f"{bases[0]}/.well-known/jwks.json")
    session = requests.Session()
    issued = verified = failed = 0
    kids: list[str] = []
    failures: list[str] = []

    def fail(message: str) -> None:
        nonlocal failed
        failed += 1
        if len(failures) < 5:
            failures.append(message)

    deadline = time.monotonic() + duration
    turn = 0
    while time.monotonic() < deadline:
        base = bases[turn % len(bases)]
        turn += 1
        try:
            response = session.post(
                f"{base}/api/token",
                auth=(client_id, client_secret),
                json={"audience": audience, "ttl": TOKEN_TTL},
                timeout=HTTP_TIMEOUT_SECS,
            )
        except requests.RequestException as e:
            fail(f"token {base}: {type(e).__name__}: {e}")
        else:
            token = None
            if response.status_code != 200:
                fail(f"token {base}: HTTP {response.status_code}: {response.text[:200]}")
            else:
                try:
                    token = response.json()["access_token"]
                except (ValueError, KeyError, TypeError):
                    fail(f"token {base}: 200 without access_token: {response.text[:200]}")
            if token is not None:
                issued += 1
                try:
                    kid = jwks.verify(token, audience, issuer)
                except (jwt.PyJWTError, RuntimeError) as e:
                    fail(f"verify token from {base}: {type(e).__name__}: {e}")
                else:
                    verified += 1
                    if kid not in kids:
                        kids.append(kid)
        time.sleep(PAUSE_SECS)

    print(json.dumps({
        "issued": issued,
        "verified": verified,
        "failed": failed,
        "fetches": jwks.fetches,
        "not_modified": jwks.not_modified,
        "kids_seen": kids,
        "failures": failures,
    }))
    return 0 if failed == 0 and issued > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
