// The OAuth flow end to end over HTTP, driven by the TypeScript SDK's own OAuth support (@modelcontextprotocol/client
// v2: StreamableHTTPClientTransport with an OAuthClientProvider; RFC 9207 `iss` checked by the SDK): discovery from the 401, authorization server
// metadata, registration (RFC 7591, and a Client ID Metadata Document served on loopback by this script),
// authorization with PKCE through the dev sign-in and consent pages (posted as a browser would: cookies, Origin),
// token, MCP calls, refresh rotation, revocation and step-up. The only hand-written part is the "browser".
import { execFile } from "node:child_process";
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Client, StreamableHTTPClientTransport, UnauthorizedError } from "@modelcontextprotocol/client";
import { chromiumBrowser, findChromium } from "./browser.mjs";
import { cookieFetch } from "./cookie-fetch.mjs";
import { upstreamBrowser } from "./upstream.mjs";

const MAX_BROWSER_HOPS = 5;
const execFileAsync = promisify(execFile);

function fail(message) {
  throw new Error(message);
}

/**
 * An OAuthClientProvider whose "user agent" is `browser`: redirectToAuthorization hands it the authorization URL and
 * keeps the code it brings back. Everything else (discovery, registration, PKCE, token requests, refresh) is the
 * SDK's.
 */
class E2EProvider {
  constructor({ redirectUrl, clientMetadataUrl, browser, clientName }) {
    this.redirectUrl = redirectUrl;
    this.clientMetadataUrl = clientMetadataUrl;
    this.browser = browser;
    this.clientName = clientName;
    this.saved = {};
    this.authorizations = [];
  }
  get clientMetadata() {
    return {
      client_name: this.clientName,
      redirect_uris: [this.redirectUrl],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  state() {
    this.saved.state = crypto.randomUUID();
    return this.saved.state;
  }
  clientInformation() {
    return this.saved.client;
  }
  saveClientInformation(client) {
    this.saved.client = client;
  }
  tokens() {
    return this.saved.tokens;
  }
  saveTokens(tokens) {
    this.saved.tokens = tokens;
  }
  saveCodeVerifier(verifier) {
    this.saved.verifier = verifier;
  }
  codeVerifier() {
    return this.saved.verifier;
  }
  // Kept with the verifier, as a real client must: the SDK then checks that the code is redeemed at the
  // authorization server the redirect went to (SEP-2352).
  saveDiscoveryState(state) {
    this.saved.discovery = state;
  }
  discoveryState() {
    return this.saved.discovery;
  }
  invalidateCredentials(scope) {
    if (scope === "tokens" || scope === "all") this.saved.tokens = undefined;
    if (scope === "all" || scope === "client") this.saved.client = undefined;
    if (scope === "all" || scope === "discovery") this.saved.discovery = undefined;
  }
  async redirectToAuthorization(url) {
    const callback = await this.browser(url);
    // The SDK does not check `state`; the application does, before finishAuth.
    const state = callback.get("state");
    if (state !== this.saved.state) fail(`state came back as ${state}, sent ${this.saved.state}`);
    this.authorizations.push({ scope: url.searchParams.get("scope"), clientId: url.searchParams.get("client_id") });
    this.saved.callback = callback;
  }
}

/** A browser that signs in as tenant/subject and ticks the requested scopes; returns the redirect's code and state. */
export function devBrowser({ base, tenant, subject, log = [] }) {
  return async (authorizationUrl) => {
    const origin = new URL(base).origin;
    const send = cookieFetch();
    const postForm = (url, fields) =>
      send(url, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", origin },
        body: new URLSearchParams(fields).toString(),
      });

    const page = await send(authorizationUrl);
    if (page.status !== 200) fail(`GET /authorize: HTTP ${page.status}: ${(await page.text()).slice(0, 200)}`);
    const signInHtml = await page.text();
    const action = /<form method="post" action="([^"]+)"/.exec(signInHtml)?.[1]?.replaceAll("&#38;", "&");
    if (!action) fail("no sign-in form");
    const consent = await postForm(new URL(action, origin), { step: "signin", tenant, subject });
    const consentHtml = await consent.text();
    if (consent.status !== 200) fail(`sign-in: HTTP ${consent.status}: ${consentHtml.slice(0, 200)}`);
    if (!consentHtml.includes(`data-tenant>${tenant}<`)) fail("the consent page does not show the tenant");
    const handle = /name="handle" value="([^"]+)"/.exec(consentHtml)?.[1];
    const requested = [...consentHtml.matchAll(/name="scope" value="([^"]+)" checked/g)].map((m) => m[1]);
    log.push({ consent: consentHtml });
    const fields = new URLSearchParams({ step: "consent", handle, decision: "approve" });
    for (const scope of requested) fields.append("scope", scope);
    let response = await send(new URL("/authorize", origin), {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin },
      body: fields.toString(),
    });
    for (let hop = 0; hop < MAX_BROWSER_HOPS && response.status === 302; hop++) {
      const location = new URL(response.headers.get("location") ?? "", origin);
      if (location.origin !== origin) {
        if (!location.searchParams.get("code")) fail(`redirected without a code: ${location.search}`);
        return location.searchParams;
      }
      response = await send(location);
    }
    fail(`consent: HTTP ${response.status}, no redirect to the client`);
  };
}

/** Connects the SDK client, letting the SDK run the whole authorization when the server answers 401. */
async function connectWithAuth(url, provider, clientOptions) {
  const attempt = async () => {
    const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
    const client = new Client({ name: "e2e-oauth", version: "1.0.0" }, clientOptions);
    await client.connect(transport);
    return { client, transport };
  };
  try {
    return await attempt();
  } catch (error) {
    if (!(error instanceof UnauthorizedError) || !provider.saved.callback) throw error;
    const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
    await finish(transport, provider);
    return attempt();
  }
}

/** The callback reached the app: the SDK checks `iss` (RFC 9207) and redeems the code with its PKCE verifier. */
async function finish(transport, provider) {
  const callback = provider.saved.callback;
  provider.saved.callback = undefined;
  await transport.finishAuth(callback);
}

/**
 * Calls a tool. On 403 insufficient_scope the SDK re-authorizes by itself for the union of the scopes it holds and
 * the challenge's (forcing a new authorization, since a refresh cannot widen a grant); the browser consents, the
 * app hands the callback to finishAuth and the call is made again on the same session.
 */
async function callWithStepUp(session, provider, name, args = {}) {
  try {
    return { result: await session.client.callTool({ name, arguments: args }) };
  } catch (error) {
    if (!(error instanceof UnauthorizedError) || !provider.saved.callback) throw error;
    await finish(session.transport, provider);
    return { result: await session.client.callTool({ name, arguments: args }), steppedUp: true };
  }
}

async function whoami(client) {
  const result = await client.callTool({ name: "whoami", arguments: {} });
  if (result.isError || !result.structuredContent) fail(`whoami failed: ${JSON.stringify(result).slice(0, 200)}`);
  return result.structuredContent;
}

async function tokenRequest(base, fields) {
  const response = await fetch(`${base}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields).toString(),
  });
  return { status: response.status, body: await response.json().catch(() => ({})) };
}

async function rawMcpStatus(url, token) {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "0" } },
    }),
  });
  await response.body?.cancel();
  return response.status;
}

/** Serves one Client ID Metadata Document on loopback (the test's own "client website"). */
export async function startMetadataDocumentServer(redirectUrl) {
  const server = createServer((request, response) => {
    if (request.url !== "/oauth/client.json") {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
    response.end(JSON.stringify(server.document));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;
  // The client ID a real client would publish (https, its own domain); the dev allowance maps it to this server.
  const clientId = "https://cimd.e2e.test/oauth/client.json";
  server.document = {
    client_id: clientId,
    client_name: "E2E Metadata Document Client",
    redirect_uris: [redirectUrl],
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
    token_endpoint_auth_method: "none",
  };
  return {
    clientId,
    log: [],
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/**
 * The checks. `report.check(group, name, fn)` records each; `base` is the server origin, `url` its /mcp.
 * `metadataDocument` is the loopback document server (or null when the dev allowance is not configured).
 */
export async function oauthChecks({ report, base, url, metadataDocument, upstream, adminToken }) {
  const group = "oauth";
  const redirectUrl = "http://127.0.0.1:1/callback"; // never contacted: the browser stops at the redirect
  const provider = new E2EProvider({
    redirectUrl,
    clientName: "E2E DCR Client",
    browser: devBrowser({ base, tenant: "e2e-oauth-a", subject: "alice" }),
  });
  let session = null;

  await report.check(
    group,
    "SDK client: 401 -> metadata -> DCR -> PKCE via dev sign-in and consent -> token",
    async () => {
      session = await connectWithAuth(url, provider);
      const me = await whoami(session.client);
      if (me.tenant !== "e2e-oauth-a" || me.subject !== "alice") fail(`whoami = ${JSON.stringify(me)}`);
      const first = provider.authorizations[0];
      if (!first) fail("the SDK never asked for an authorization");
      if (!provider.saved.client?.client_id) fail("no client registered");
      return `registered ${provider.saved.client.client_id.slice(0, 8)}…, scope "${first.scope}", whoami = e2e-oauth-a/alice`;
    },
  );

  await report.check(group, "step-up: a kb.read tool gets 403 insufficient_scope, the SDK re-authorizes", async () => {
    if (!session) fail("no session");
    const before = provider.authorizations.length;
    const outcome = await callWithStepUp(session, provider, "kb_stats");
    if (outcome.result.isError) fail(`kb_stats failed after step-up: ${JSON.stringify(outcome.result).slice(0, 200)}`);
    if (!outcome.steppedUp || provider.authorizations.length !== before + 1) fail("no re-authorization happened");
    const scope = provider.authorizations.at(-1).scope ?? "";
    if (!scope.split(" ").includes("kb.read") || !scope.split(" ").includes("mcp"))
      fail(`re-authorized for "${scope}"`);
    return `re-authorized for "${scope}" on the same session; kb_stats answered`;
  });

  await report.check(
    group,
    "refresh rotation: an expired access token is refreshed by the SDK; the old refresh token is dead",
    async () => {
      if (!session) fail("no session");
      const old = provider.saved.tokens;
      const authorizations = provider.authorizations.length;
      // Make the server refuse the access token; the SDK must refresh on the 401.
      provider.saved.tokens = { ...old, access_token: `${old.access_token}x` };
      await session.client.close();
      session = await connectWithAuth(url, provider);
      await whoami(session.client);
      const fresh = provider.saved.tokens;
      if (fresh.refresh_token === old.refresh_token) fail("refresh token not rotated");
      if (provider.authorizations.length !== authorizations) fail("the SDK re-authorized instead of refreshing");
      // Using the new refresh token retires the previous one (the library keeps it only until the new one is used).
      const clientId = provider.saved.client.client_id;
      const next = await tokenRequest(base, {
        grant_type: "refresh_token",
        refresh_token: fresh.refresh_token,
        client_id: clientId,
      });
      if (next.status !== 200) fail(`refresh with the new token: HTTP ${next.status}`);
      provider.saved.tokens = next.body;
      const replay = await tokenRequest(base, {
        grant_type: "refresh_token",
        refresh_token: old.refresh_token,
        client_id: clientId,
      });
      if (replay.status !== 400 || replay.body.error !== "invalid_grant")
        fail(`old refresh token: HTTP ${replay.status}`);
      return "rotated; the retired refresh token gets invalid_grant";
    },
  );

  await report.check(group, "revocation (RFC 7009): a revoked access token is refused by /mcp", async () => {
    const { access_token: token } = provider.saved.tokens;
    if ((await rawMcpStatus(url, token)) !== 200) fail("the token did not work before revocation");
    const revoke = await fetch(`${base}/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token, client_id: provider.saved.client.client_id }).toString(),
    });
    if (revoke.status !== 200) fail(`revocation: HTTP ${revoke.status}`);
    const status = await rawMcpStatus(url, token);
    if (status !== 401) fail(`revoked token: HTTP ${status}`);
    return "200 before, 401 after";
  });
  await session?.client.close().catch(() => {});

  const executablePath = findChromium();
  if (!executablePath) {
    report.skip(
      group,
      "headless Chromium sign-in",
      "no Chromium installed (apt-get install chromium; or CHROMIUM_PATH)",
    );
  } else {
    await report.check(
      group,
      "headless Chromium (DevTools protocol) completes sign-in and consent",
      async () => {
        const chromium = await chromiumBrowser({
          executablePath,
          tenant: "e2e-oauth-c",
          subject: "carol",
          redirectUrl,
        });
        try {
          const viaBrowser = new E2EProvider({
            redirectUrl,
            clientName: "E2E Browser Client",
            browser: chromium.signIn,
          });
          const own = await connectWithAuth(url, viaBrowser);
          const me = await whoami(own.client);
          await own.client.close();
          if (me.tenant !== "e2e-oauth-c" || me.subject !== "carol") fail(`whoami = ${JSON.stringify(me)}`);
          if (chromium.seen.consentTenant !== "e2e-oauth-c")
            fail(`consent showed tenant ${chromium.seen.consentTenant}`);
          return `${executablePath}: consent "${chromium.seen.clientName}", whoami = e2e-oauth-c/carol`;
        } finally {
          await chromium.close().catch(() => {});
        }
      },
      { timeoutMs: 90_000 },
    );
  }

  if (upstream) await upstreamChecks({ report, base, url, redirectUrl, adminToken });

  if (!metadataDocument) {
    report.skip(group, "metadata-document client", "no loopback document server");
    return;
  }
  await report.check(
    group,
    "metadata-document client (CIMD served on loopback): signs in without registering",
    async () => {
      const cimd = new E2EProvider({
        redirectUrl,
        clientMetadataUrl: metadataDocument.clientId,
        clientName: "E2E Metadata Document Client",
        browser: devBrowser({ base, tenant: "e2e-oauth-b", subject: "bob", log: metadataDocument.log }),
      });
      const own = await connectWithAuth(url, cimd, { versionNegotiation: { mode: { pin: "2026-07-28" } } });
      try {
        const me = await whoami(own.client);
        if (me.tenant !== "e2e-oauth-b") fail(`whoami = ${JSON.stringify(me)}`);
        if (cimd.authorizations[0]?.clientId !== metadataDocument.clientId)
          fail("the SDK did not use the document URL");
        const consent = metadataDocument.log.at(-1)?.consent ?? "";
        if (!consent.includes("Published by <strong>cimd.e2e.test</strong>"))
          fail("consent page lacks the verified domain");
        return `client_id ${metadataDocument.clientId}, 2026-07-28, whoami = e2e-oauth-b/bob`;
      } finally {
        await own.client.close();
      }
    },
  );
}

/** The production sign-in path against a real OpenID Connect provider on loopback (scripts/e2e/upstream.mjs). */
async function upstreamChecks({ report, base, url, redirectUrl, adminToken }) {
  const group = "oauth upstream";
  await report.check(group, "a user whose verified email domain is unmapped: refusal page, no grant", async () => {
    const provider = new E2EProvider({
      redirectUrl,
      clientName: "E2E Upstream Client",
      browser: upstreamBrowser({ login: "dave@unmapped.test" }),
    });
    try {
      await connectWithAuth(url, provider);
    } catch (error) {
      if (!/No tenant for this account/.test(error.message)) throw error;
      if (provider.saved.tokens) fail("tokens were issued");
      return "HTTP 403 'No tenant for this account'; no code, no token";
    }
    fail("the unmapped user was signed in");
  });

  await report.check(group, "npm run tenant -- map-domain e2e-corp.test e2e-oidc (admin API)", async () => {
    const script = fileURLToPath(new URL("../tenant.mjs", import.meta.url));
    const { stdout } = await execFileAsync(
      process.execPath,
      [script, "map-domain", "e2e-corp.test", "e2e-oidc", "--url", base],
      { env: { ...process.env, ADMIN_TOKEN: adminToken }, timeout: 30_000 },
    );
    const answer = JSON.parse(stdout);
    if (answer.tenant !== "e2e-oidc") fail(`answer: ${stdout}`);
    return "e2e-corp.test -> e2e-oidc";
  });

  await report.check(
    group,
    "OIDC sign-in (code + PKCE + nonce upstream, ID token verified) binds the mapped tenant",
    async () => {
      const seen = {};
      const provider = new E2EProvider({
        redirectUrl,
        clientName: "E2E Upstream Client",
        browser: upstreamBrowser({ login: "erin@e2e-corp.test", seen }),
      });
      const session = await connectWithAuth(url, provider);
      try {
        const me = await whoami(session.client);
        if (me.tenant !== "e2e-oidc" || me.subject !== "erin@e2e-corp.test") fail(`whoami = ${JSON.stringify(me)}`);
        if (seen.tenant !== "e2e-oidc") fail(`consent showed tenant ${seen.tenant}`);
        return "consent showed e2e-oidc; whoami = e2e-oidc/erin@e2e-corp.test";
      } finally {
        await session.client.close();
      }
    },
  );
}
