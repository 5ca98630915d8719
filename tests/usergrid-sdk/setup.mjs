// Creates, through gridsocket's REST API, what the SDK suite expects its Usergrid sandbox to
// have, and adds a `local` target for it to the suite's own tests/config.test.json.
//
//   node setup.mjs BASE_URL SUPERUSER PASSWORD CONFIG_JSON
//
// - an organization (with its admin) and an application, whose client credentials the suite
//   uses (`clientId` / `clientSecret`);
// - the app user `authtest` / `authtest@test.com` / `P@ssw0rd` (config `test`);
// - the sandbox app's open guest role, `get,post,put,delete:/**` (the suite removes it and
//   adds it back itself, in client.auth.test.js "authMode");
// - existing entities in the `nodejs` collection: the suite's sandbox had them from earlier
//   runs, and some tests read them before any test has created one ("GET() response.first
//   should exist", "hasNextPage should be true when more entities exist", "loadNextPage()");
// - the pairs the connection tests connect, `testClientConnectOne`/`Two` and
//   `testEntityConnectOne`/`Two`: their before hooks POST both as an array, but the SDK
//   flattens its arguments and sends only the second object, so on the sandbox the first of
//   each pair was one left from earlier runs (the second POST then answers 400 duplicate).
import { readFileSync, writeFileSync } from "node:fs";

const [base, suName, suPassword, configPath] = process.argv.slice(2);
if (!configPath) {
  console.error("usage: node setup.mjs BASE_URL SUPERUSER PASSWORD CONFIG_JSON");
  process.exit(2);
}

const ORG = "sdk-org";
const APP = "sdk-app";
const TEST = {
  collection: "nodejs",
  email: "authtest@test.com",
  password: "P@ssw0rd",
  username: "authtest",
};
const SEED_ENTITIES = 25;

async function call(method, path, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    throw new Error(`setup: ${method} ${path} answered ${res.status}: ${text.slice(0, 500)}`);
  }
  return json;
}

const su = await call("POST", "/management/token", {
  grant_type: "password",
  username: suName,
  password: suPassword,
});
await call(
  "POST",
  "/management/orgs",
  {
    organization: ORG,
    username: "sdkadmin",
    name: "SDK suite admin",
    email: "sdkadmin@test.com",
    password: "adm1n-P@ssw0rd",
  },
  su.access_token,
);
const app = await call("POST", `/management/orgs/${ORG}/apps`, { name: APP }, su.access_token);
const { client_id: clientId, client_secret: clientSecret } = app.credentials;

// Everything inside the app as its own client, as an app admin would.
const appToken = (
  await call("POST", `/${ORG}/${APP}/token`, {
    grant_type: "client_credentials",
    client_id: clientId,
    client_secret: clientSecret,
  })
).access_token;
const inApp = (method, path, body) => call(method, `/${ORG}/${APP}${path}`, body, appToken);

await inApp("POST", "/users", {
  username: TEST.username,
  email: TEST.email,
  password: TEST.password,
});
await inApp("POST", "/roles/guest/permissions", { permission: "get,post,put,delete:/**" });
for (let i = 0; i < SEED_ENTITIES; i++) {
  await inApp("POST", `/${TEST.collection}`, {
    seed: i,
    color: i % 2 === 0 ? "black" : "white",
  });
}

for (const name of [
  "testClientConnectOne",
  "testClientConnectTwo",
  "testEntityConnectOne",
  "testEntityConnectTwo",
]) {
  await inApp("POST", `/${TEST.collection}`, { name });
}

const config = JSON.parse(readFileSync(configPath, "utf8"));
config.local = {
  orgId: ORG,
  appId: APP,
  baseUrl: process.env.SDK_BASE_URL || base,
  clientId,
  clientSecret,
  test: TEST,
};
writeFileSync(configPath, JSON.stringify(config, null, 4) + "\n");
console.log(`setup: ${ORG}/${APP} with client ${clientId}, user ${TEST.username}, open guest role, ${SEED_ENTITIES + 4} ${TEST.collection}`);
