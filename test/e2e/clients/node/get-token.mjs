// Gets a managed-identity token twice with a real, unchanged Node client
// library and prints one JSON line describing it. The e2e suite runs this in
// the pod network namespace, so the requests to 169.254.169.254 cross the real
// proxy-init redirect and reach the real proxy.
//
// The raw token is never printed (test logs must not carry tokens): the output
// holds its SHA-256, its length and its decoded claims.
//
// Usage:
//   node get-token.mjs identity [--client-id ID | --object-id ID | --resource-id ID] --scope SCOPE
//   node get-token.mjs dac      [--client-id ID] --scope SCOPE
//   node get-token.mjs msal     [--client-id ID | --object-id ID | --resource-id ID] --resource RESOURCE
//
// "identity" is @azure/identity ManagedIdentityCredential; "dac" is its
// DefaultAzureCredential (--client-id is managedIdentityClientId); "msal" is
// @azure/msal-node ManagedIdentityApplication. Which service they ask
// depends on the environment, as in an app: IMDS by default, the App Service
// endpoint when IDENTITY_ENDPOINT and IDENTITY_HEADER are set.

import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { DefaultAzureCredential, ManagedIdentityCredential } from "@azure/identity";
import { ManagedIdentityApplication } from "@azure/msal-node";

function fail(msg) {
  process.stderr.write(`get-token: ${msg}\n`);
  process.exit(1);
}

function claimsOf(token) {
  const parts = token.split(".");
  if (parts.length !== 3) {
    fail(`access token is not a JWT (${parts.length} segments)`);
  }
  return JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
}

function describe(client, first, second, fromCache, expiresOn) {
  return {
    client,
    calls: 2,
    token_sha256: createHash("sha256").update(first).digest("hex"),
    token_len: first.length,
    same_token: first === second,
    ...(fromCache === undefined ? {} : { from_cache: fromCache }),
    expires_on: expiresOn,
    claims: claimsOf(first),
  };
}

async function viaIdentity(sel, scope) {
  let opts;
  if (sel.clientId) opts = { clientId: sel.clientId };
  else if (sel.objectId) opts = { objectId: sel.objectId };
  else if (sel.resourceId) opts = { resourceId: sel.resourceId };
  const cred = opts ? new ManagedIdentityCredential(opts) : new ManagedIdentityCredential();
  const first = await cred.getToken(scope);
  const second = await cred.getToken(scope);
  if (!first || !second) fail("getToken returned null");
  return describe("node-identity", first.token, second.token, undefined,
    Math.floor(first.expiresOnTimestamp / 1000));
}

async function viaDefaultAzureCredential(sel, scope) {
  const cred = new DefaultAzureCredential(sel.clientId ? { managedIdentityClientId: sel.clientId } : {});
  const first = await cred.getToken(scope);
  const second = await cred.getToken(scope);
  if (!first || !second) fail("getToken returned null");
  return describe("node-dac", first.token, second.token, undefined,
    Math.floor(first.expiresOnTimestamp / 1000));
}

async function viaMSAL(sel, resource) {
  const managedIdentityIdParams = {};
  if (sel.clientId) managedIdentityIdParams.userAssignedClientId = sel.clientId;
  else if (sel.objectId) managedIdentityIdParams.userAssignedObjectId = sel.objectId;
  else if (sel.resourceId) managedIdentityIdParams.userAssignedResourceId = sel.resourceId;
  const app = new ManagedIdentityApplication({ managedIdentityIdParams });
  const first = await app.acquireToken({ resource });
  const second = await app.acquireToken({ resource });
  if (first.fromCache) fail("first token came from the cache");
  return describe("node-msal", first.accessToken, second.accessToken, second.fromCache,
    Math.floor(first.expiresOn.getTime() / 1000));
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      "client-id": { type: "string" },
      "object-id": { type: "string" },
      "resource-id": { type: "string" },
      scope: { type: "string" },
      resource: { type: "string" },
    },
  });
  const sel = {
    clientId: values["client-id"],
    objectId: values["object-id"],
    resourceId: values["resource-id"],
  };
  if ([sel.clientId, sel.objectId, sel.resourceId].filter(Boolean).length > 1) {
    fail("at most one of --client-id, --object-id, --resource-id");
  }
  let out;
  switch (positionals[0]) {
    case "identity":
      if (!values.scope) fail("identity needs --scope");
      out = await viaIdentity(sel, values.scope);
      break;
    case "dac":
      if (!values.scope) fail("dac needs --scope");
      if (sel.objectId || sel.resourceId) fail("dac selects a managed identity by client id only");
      out = await viaDefaultAzureCredential(sel, values.scope);
      break;
    case "msal":
      if (!values.resource) fail("msal needs --resource");
      out = await viaMSAL(sel, values.resource);
      break;
    default:
      fail("usage: get-token.mjs identity|dac|msal [flags]");
  }
  process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
}

main().catch((err) => fail(err && err.stack ? err.stack : String(err)));
