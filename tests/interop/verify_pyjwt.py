"""Verify an auth-jit token with PyJWT, a JWT implementation that is not ours.

Usage: verify_pyjwt.py JWKS_URL ISSUER AUDIENCE TOKEN [TYP]
TYP is the JOSE `typ` the token must carry: at+jwt (the default, an access
token) or txntoken+jwt (a Transaction Token, whose audience is the trust
domain). Prints the claims as JSON and exits 0 if the token verifies; prints the
error and exits 1 otherwise.
"""
import json
import sys

import jwt


def main() -> int:
    jwks_url, issuer, audience, token = sys.argv[1:5]
    typ = sys.argv[5] if len(sys.argv) > 5 else "at+jwt"
    required = {
        "at+jwt": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"],
        "txntoken+jwt": ["exp", "iat", "iss", "aud", "sub", "txn", "scope", "req_wl"],
    }[typ]
    header = jwt.get_unverified_header(token)
    if header.get("typ") != typ:
        print(f"wrong typ: {header.get('typ')}")
        return 1
    client = jwt.PyJWKClient(jwks_url, cache_keys=False)
    try:
        key = client.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["EdDSA", "ES256", "RS256", "PS256"],
            audience=audience,
            issuer=issuer,
            options={"require": required},
        )
    except jwt.PyJWTError as error:
        print(f"{type(error).__name__}: {error}")
        return 1
    print(json.dumps(claims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
