// Verify an auth-jit token with jose (Node), a JWT implementation that is not ours.
//
// Usage: node verify_jose.mjs JWKS_URL ISSUER AUDIENCE TOKEN
// Prints {"ok": true, "alg", "kid", "claims"} and exits 0 if the token
// verifies against the JWKS at JWKS_URL (typ at+jwt, the given issuer and
// audience, an asymmetric algorithm); prints {"ok": false, "error"} and
// exits 1 otherwise.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const ALGORITHMS = ['EdDSA', 'ES256', 'RS256', 'PS256'];

async function main(argv) {
  if (argv.length !== 4) {
    console.error('usage: node verify_jose.mjs JWKS_URL ISSUER AUDIENCE TOKEN');
    return 2;
  }
  const [jwksUrl, issuer, audience, token] = argv;
  try {
    const jwks = createRemoteJWKSet(new URL(jwksUrl));
    const { payload, protectedHeader } = await jwtVerify(token, jwks, {
      issuer,
      audience,
      typ: 'at+jwt',
      algorithms: ALGORITHMS,
    });
    console.log(JSON.stringify({
      ok: true,
      alg: protectedHeader.alg,
      kid: protectedHeader.kid ?? null,
      claims: payload,
    }));
    return 0;
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e) }));
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
