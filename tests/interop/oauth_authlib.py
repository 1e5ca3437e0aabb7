"""Drive auth-jit with Authlib, an OAuth 2.0 client library that is not ours.

Every subcommand prints exactly one JSON document on stdout. On success it
exits 0. On any error it prints {"error": "Class: message"} and exits 1, with
"status" and "body" added when an HTTP response was received.

Usage (URLs are full endpoint URLs, e.g. http://127.0.0.1:8000/oauth/token):

  oauth_authlib.py gen-key --alg {EdDSA,ES256,RS256} --private P.pem --public Q.pem
  oauth_authlib.py client-credentials --token-url URL --client-id ID
      (--secret S --method {client_secret_basic,client_secret_post}
       | --private-key P.pem --alg ALG) --audience AUD [--scope "a b"]
  oauth_authlib.py exchange --token-url URL --client-id ID --secret S
      --subject-token JWT --audience AUD [--scope "a b"]
  oauth_authlib.py introspect --url URL --client-id ID --secret S --token T
  oauth_authlib.py revoke --url URL --client-id ID --secret S --token T
  oauth_authlib.py replay --token-url URL --client-id ID --private-key P.pem
      --alg ALG --audience AUD

client-credentials prints the token response; exchange prints it too;
introspect prints the introspection JSON; revoke prints {"status": 200};
replay sends one private_key_jwt assertion twice and prints
{"first": 200, "second": 4xx, "second_body": "..."}.

Authlib's PrivateKeyJWT imports a PEM string as RSA only, so the key is
imported here as the joserfc key object matching --alg and handed over.
"""

import argparse
import json
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import ECKey, OKPKey, RSAKey

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TIMEOUT = 30
ALGS = ("EdDSA", "ES256", "RS256")
KEY_CLASSES = {"EdDSA": OKPKey, "ES256": ECKey, "RS256": RSAKey}


class JsonArgumentParser(argparse.ArgumentParser):
    """Reports a bad command line like any other error: JSON, exit 1."""

    def error(self, message):
        print(json.dumps({"error": f"UsageError: {self.prog}: {message}"}))
        sys.exit(1)


class HttpError(Exception):
    """A response that is not a success, kept whole for the error report."""

    def __init__(self, response):
        super().__init__("unexpected status")
        self.response = response


def load_key(path, alg):
    with open(path, "rb") as pem:
        return KEY_CLASSES[alg].import_key(pem.read())


def session(args, secret, method):
    """An OAuth2Session that remembers the last token endpoint response."""
    client = OAuth2Session(
        args.client_id,
        secret,
        token_endpoint_auth_method=method,
        default_timeout=TIMEOUT,
    )
    client.last_response = None

    def remember(response):
        client.last_response = response
        return response

    client.register_compliance_hook("access_token_response", remember)
    return client


def fetch(client, url, grant_type, **params):
    """fetch_token, reporting the HTTP response when Authlib raises."""
    params = {k: v for k, v in params.items() if v is not None}
    try:
        return dict(client.fetch_token(url, grant_type=grant_type, **params))
    except Exception as error:
        if getattr(error, "response", None) is None:
            error.response = client.last_response
        raise


def gen_key(args):
    if args.alg == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    elif args.alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    with open(args.private, "wb") as out:
        out.write(private)
    with open(args.public, "wb") as out:
        out.write(public)
    return {"ok": True}


def client_credentials(args):
    if args.private_key:
        if not args.alg:
            raise ValueError("--private-key needs --alg")
        client = session(args, load_key(args.private_key, args.alg), "private_key_jwt")
        client.register_client_auth_method(PrivateKeyJWT(args.token_url, alg=args.alg))
    else:
        if not args.method:
            raise ValueError("--secret needs --method")
        client = session(args, args.secret, args.method)
    return fetch(
        client,
        args.token_url,
        "client_credentials",
        audience=args.audience,
        scope=args.scope,
    )


def exchange(args):
    client = session(args, args.secret, "client_secret_basic")
    return fetch(
        client,
        args.token_url,
        TOKEN_EXCHANGE,
        subject_token=args.subject_token,
        subject_token_type=ACCESS_TOKEN_TYPE,
        audience=args.audience,
        scope=args.scope,
    )


def introspect(args):
    client = session(args, args.secret, "client_secret_basic")
    response = client.introspect_token(args.url, token=args.token)
    if not response.ok:
        raise HttpError(response)
    return response.json()


def revoke(args):
    client = session(args, args.secret, "client_secret_basic")
    response = client.revoke_token(args.url, token=args.token)
    if not response.ok:
        raise HttpError(response)
    return {"status": response.status_code}


def replay(args):
    """One assertion built by Authlib (exp = now + 300), posted twice."""
    assertion = private_key_jwt_sign(
        load_key(args.private_key, args.alg),
        client_id=args.client_id,
        token_endpoint=args.token_url,
        alg=args.alg,
        expires_in=300,
    )
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        "audience": args.audience,
    }
    first = requests.post(args.token_url, data=form, timeout=TIMEOUT)
    second = requests.post(args.token_url, data=form, timeout=TIMEOUT)
    return {
        "first": first.status_code,
        "second": second.status_code,
        "second_body": second.text,
    }


def parser():
    top = JsonArgumentParser(description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)

    def command(name, handler, client=True):
        sub = commands.add_parser(name)
        sub.set_defaults(handler=handler)
        if client:
            sub.add_argument("--client-id", required=True)
        return sub

    sub = command("gen-key", gen_key, client=False)
    sub.add_argument("--alg", choices=ALGS, required=True)
    sub.add_argument("--private", required=True)
    sub.add_argument("--public", required=True)

    sub = command("client-credentials", client_credentials)
    sub.add_argument("--token-url", required=True)
    auth = sub.add_mutually_exclusive_group(required=True)
    auth.add_argument("--secret")
    auth.add_argument("--private-key")
    sub.add_argument("--method", choices=("client_secret_basic", "client_secret_post"))
    sub.add_argument("--alg", choices=ALGS)
    sub.add_argument("--audience", required=True)
    sub.add_argument("--scope")

    sub = command("exchange", exchange)
    sub.add_argument("--token-url", required=True)
    sub.add_argument("--secret", required=True)
    sub.add_argument("--subject-token", required=True)
    sub.add_argument("--audience", required=True)
    sub.add_argument("--scope")

    for name, handler in (("introspect", introspect), ("revoke", revoke)):
        sub = command(name, handler)
        sub.add_argument("--url", required=True)
        sub.add_argument("--secret", required=True)
        sub.add_argument("--token", required=True)

    sub = command("replay", replay)
    sub.add_argument("--token-url", required=True)
    sub.add_argument("--private-key", required=True)
    sub.add_argument("--alg", choices=ALGS, required=True)
    sub.add_argument("--audience", required=True)
    return top


def main():
    args = parser().parse_args()
    try:
        result = args.handler(args)
    except Exception as error:
        report = {"error": f"{type(error).__name__}: {error}"}
        response = getattr(error, "response", None)
        if response is not None:
            report["status"] = response.status_code
            report["body"] = response.text
            report["error"] += f" (HTTP {response.status_code}: {response.text})"
        print(json.dumps(report))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
