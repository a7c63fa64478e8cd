#!/usr/bin/python3
"""Get a managed-identity token twice with Debian's python3-azure.

Uses azure.identity.ManagedIdentityCredential (azure-identity 1.13.0b2 in
Debian 12), unchanged, and prints one JSON line describing the token. The e2e
suite runs it in the pod network namespace, so its requests to
169.254.169.254 cross the real proxy-init redirect and reach the real proxy.

That azure-identity version marks managed identity unavailable for the rest
of the process after any 400, so the suite runs one process per scenario.

The raw token is never printed (test logs must not carry tokens): the output
holds its SHA-256, its length and its decoded claims.

It asks IMDS by default, and the App Service endpoint when IDENTITY_ENDPOINT
and IDENTITY_HEADER are set, as an app would. --object-id and --msi-res-id
or --mi-res-id go through identity_config verbatim: the IMDS names
object_id and msi_res_id, App Service's mi_res_id.

Usage:
    get_token.py [--client-id ID | --object-id ID | --msi-res-id ID | --mi-res-id ID] SCOPE
"""

import argparse
import base64
import hashlib
import json
import sys

from azure.identity import ManagedIdentityCredential


def claims_of(token):
    parts = token.split(".")
    if len(parts) != 3:
        raise SystemExit("get_token.py: access token is not a JWT (%d segments)" % len(parts))
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


def main():
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--client-id")
    group.add_argument("--object-id")
    group.add_argument("--msi-res-id")
    group.add_argument("--mi-res-id")
    parser.add_argument("scope")
    args = parser.parse_args()

    kwargs = {}
    if args.client_id:
        kwargs["client_id"] = args.client_id
    elif args.object_id:
        kwargs["identity_config"] = {"object_id": args.object_id}
    elif args.msi_res_id:
        kwargs["identity_config"] = {"msi_res_id": args.msi_res_id}
    elif args.mi_res_id:
        kwargs["identity_config"] = {"mi_res_id": args.mi_res_id}

    cred = ManagedIdentityCredential(**kwargs)
    first = cred.get_token(args.scope)
    second = cred.get_token(args.scope)
    out = {
        "client": "python-azure-identity",
        "calls": 2,
        "token_sha256": hashlib.sha256(first.token.encode()).hexdigest(),
        "token_len": len(first.token),
        "same_token": first.token == second.token,
        "expires_on": int(first.expires_on),
        "claims": claims_of(first.token),
    }
    sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
