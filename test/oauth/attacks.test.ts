import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import { adminCall } from "../helpers/admin";
import { uniqueTenant } from "../helpers/kb-client";
import {
  asFetch,
  authorize,
  authorizeQuery,
  kvKeys,
  pkce,
  postForm,
  REDIRECT,
  redeem,
  registerClient,
  signIn,
  tokensFor,
  whoami,
} from "../helpers/oauth";
import { BASE, RESOURCE } from "../helpers/tokens";

/** Each attack is refused, and afterwards the tenant has no grant (or no token) it did not have before. */
const grantsOf = (tenant: string) => kvKeys(`grant:${tenant}/`);
const tokensOf = (tenant: string) => kvKeys(`token:${tenant}/`);

async function codeFor(tenant: string) {
  const clientId = await registerClient();
  const verifier = await pkce();
  const { code } = await authorize({ clientId, pkce: verifier, tenant });
  return { clientId, verifier, code };
}

const redeemValues = (clientId: string, code: string, verifier: string, extra: Record<string, string> = {}) => ({
  grant_type: "authorization_code",
  code,
  redirect_uri: REDIRECT,
  client_id: clientId,
  code_verifier: verifier,
  resource: RESOURCE,
  ...extra,
});

describe("OAuth attacks", () => {
  it("authorization code replay: the second redemption fails and mints nothing", async () => {
    const tenant = uniqueTenant("oa-replay");
    const { clientId, verifier, code } = await codeFor(tenant);
    const first = await redeem(redeemValues(clientId, code, verifier.verifier));
    expect(first.status).toBe(200);
    const before = await tokensOf(tenant);
    const second = await redeem(redeemValues(clientId, code, verifier.verifier));
    expect(second.status).toBe(400);
    expect(second.body.error).toBe("invalid_grant");
    expect((await tokensOf(tenant)).filter((key) => !before.includes(key))).toEqual([]);
  });

  it("PKCE mismatch: invalid_grant, no token", async () => {
    const tenant = uniqueTenant("oa-pkce");
    const { clientId, code } = await codeFor(tenant);
    const wrong = await pkce();
    const answer = await redeem(redeemValues(clientId, code, wrong.verifier));
    expect(answer.status).toBe(400);
    expect(answer.body.error).toBe("invalid_grant");
    const missing = await redeem({ ...redeemValues(clientId, code, ""), code_verifier: "" });
    expect(missing.status).toBe(400);
    expect(await tokensOf(tenant)).toEqual([]);
  });

  it("redirect_uri mismatch: refused on the page (never redirected), and at the token endpoint", async () => {
    const tenant = uniqueTenant("oa-redirect");
    const clientId = await registerClient();
    const verifier = await pkce();
    for (const redirectUri of [
      "http://127.0.0.1:9999/callback/",
      "http://127.0.0.1:9999/other",
      "https://evil.test/cb",
    ]) {
      const page = await asFetch(`/authorize?${authorizeQuery({ clientId, pkce: verifier, redirectUri })}`);
      expect(page.status).toBe(400);
      expect(page.headers.get("location")).toBeNull();
      expect(await page.text()).toContain("Invalid redirect URI");
    }
    const { code } = await authorize({ clientId, pkce: verifier, tenant });
    const answer = await redeem({
      ...redeemValues(clientId, code, verifier.verifier),
      redirect_uri: "http://127.0.0.1:9999/x",
    });
    expect(answer.status).toBe(400);
    expect(answer.body.error).toBe("invalid_grant");
    expect(await tokensOf(tenant)).toEqual([]);
  });

  it("consent without its browser binding or with a wrong handle (CSRF): refused, no grant", async () => {
    const tenant = uniqueTenant("oa-csrf");
    const clientId = await registerClient();
    const query = authorizeQuery({ clientId, pkce: await pkce() });
    const consent = await signIn(query, tenant, "alice");
    expect(consent.status).toBe(200);
    expect(consent.handle).not.toBe("");
    const attempts: [string, Record<string, string>][] = [
      ["no cookie", {}],
      ["wrong handle", { cookie: consent.cookie }],
      ["foreign origin", { cookie: consent.cookie, origin: "https://evil.test" }],
    ];
    for (const [label, headers] of attempts) {
      const handle = label === "wrong handle" ? `${consent.handle}x` : consent.handle;
      const answer = await postForm(
        "/authorize",
        { step: "consent", handle, decision: "approve", scope: "mcp" },
        headers,
      );
      expect(answer.status, label).toBeGreaterThanOrEqual(400);
      expect(answer.headers.get("location"), label).toBeNull();
    }
    expect(await grantsOf(tenant)).toEqual([]);
    // Control: the real browser (cookie + handle) still works once.
    const ok = await postForm(
      "/authorize",
      { step: "consent", handle: consent.handle, decision: "approve", scope: "mcp" },
      { cookie: consent.cookie },
    );
    expect(ok.status).toBe(302);
    expect((await grantsOf(tenant)).length).toBe(1);
  });

  it("an invalid request whose redirect the library validated: a page with a link back, never a 500 or an automatic redirect", async () => {
    // Anyone can register a redirect of their choosing, so an error redirect would make this origin an open
    // redirector (RFC 9700 4.11.2): the error goes back only through a link the user follows.
    const clientId = await registerClient({ redirect_uris: ["https://evil.test/landing"] });
    const verifier = await pkce();
    const cases = [
      authorizeQuery({
        clientId,
        pkce: verifier,
        redirectUri: "https://evil.test/landing",
        resource: "https://other.test/mcp",
      }),
      authorizeQuery({ clientId, pkce: verifier, redirectUri: "https://evil.test/landing" }).replace(
        /&code_challenge=[^&]*/,
        "",
      ),
    ];
    for (const query of cases) {
      const page = await asFetch(`/authorize?${query}`);
      expect(page.status).toBe(400);
      expect(page.headers.get("location")).toBeNull();
      const html = await page.text();
      expect(html).toContain("Return to evil.test");
      expect(html).toMatch(/href="https:\/\/evil\.test\/landing\?[^"]*error=/);
    }
  });

  it("Deny redirects with access_denied and the client's state; no grant", async () => {
    const tenant = uniqueTenant("oa-deny");
    const clientId = await registerClient();
    const before = new Set(await kvKeys("signin:"));
    const consent = await signIn(authorizeQuery({ clientId, pkce: await pkce(), state: "st-9" }), tenant, "alice");
    const waiting = (await kvKeys("signin:")).filter((key) => !before.has(key));
    expect(waiting).toHaveLength(1);
    const answer = await postForm(
      "/authorize",
      { step: "consent", handle: consent.handle, decision: "deny" },
      { cookie: consent.cookie },
    );
    expect(answer.status).toBe(302);
    const location = new URL(answer.headers.get("location") ?? "");
    expect(location.searchParams.get("error")).toBe("access_denied");
    expect(location.searchParams.get("state")).toBe("st-9");
    expect(await grantsOf(tenant)).toEqual([]);
    // Nothing of the refused sign-in stays behind.
    expect(await kvKeys("signin:")).not.toContain(waiting[0]);
  });

  it("the signed-in identity waits for consent sealed: KV holds neither tenant nor subject in the clear", async () => {
    const tenant = uniqueTenant("oa-sealed");
    const subject = "sealed-subject@corp.example";
    const clientId = await registerClient();
    const before = new Set(await kvKeys("signin:"));
    const consent = await signIn(authorizeQuery({ clientId, pkce: await pkce() }), tenant, subject);
    expect(consent.status).toBe(200);
    const added = (await kvKeys("signin:")).filter((key) => !before.has(key));
    expect(added).toHaveLength(1);
    const stored = (await env.OAUTH_KV.get(added[0] as string)) ?? "";
    expect(stored.length).toBeGreaterThan(28);
    expect(stored).not.toContain(tenant);
    expect(stored).not.toContain("sealed-subject");
    expect(added[0]).not.toContain(consent.handle);
  });

  it("a code for tenant A redeemed naming another resource: invalid_target, no token", async () => {
    const tenant = uniqueTenant("oa-target");
    const { clientId, verifier, code } = await codeFor(tenant);
    for (const resource of ["https://other.test/mcp", "https://kb.test/mcp-other", `${BASE}/admin`]) {
      const answer = await redeem(redeemValues(clientId, code, verifier.verifier, { resource }));
      expect(answer.status, resource).toBe(400);
      expect(answer.body.error, resource).toBe("invalid_target");
    }
    expect(await tokensOf(tenant)).toEqual([]);
    // The code was not consumed by the refused attempts (checked before redemption).
    expect((await redeem(redeemValues(clientId, code, verifier.verifier))).status).toBe(200);
  });

  it("the client cannot choose the tenant: the authorization request's tenant-like parameters are ignored", async () => {
    const clientId = await registerClient();
    const verifier = await pkce();
    const query = `${authorizeQuery({ clientId, pkce: verifier })}&tenant=victim&tenant_id=victim`;
    const consent = await signIn(query, "oa-chosen", "alice");
    expect(consent.html).toContain("oa-chosen");
    const decision = await postForm(
      "/authorize",
      { step: "consent", handle: consent.handle, decision: "approve", scope: ["mcp", "kb.read"], tenant: "victim" },
      { cookie: consent.cookie },
    );
    const code = new URL(decision.headers.get("location") ?? "").searchParams.get("code") ?? "";
    const tokens = (await redeem(redeemValues(clientId, code, verifier.verifier))).body as { access_token: string };
    expect(await whoami(tokens.access_token)).toMatchObject({ identity: { tenant: "oa-chosen" } });
    expect(await grantsOf("victim")).toEqual([]);
  });

  it("offboarding revokes A's grants and tokens, refuses A's refresh token and new authorizations; B unaffected", async () => {
    const tenantA = uniqueTenant("oa-off-a");
    const tenantB = uniqueTenant("oa-off-b");
    const clientId = await registerClient();
    const a = await tokensFor({ clientId, pkce: await pkce(), tenant: tenantA });
    const b = await tokensFor({ clientId, pkce: await pkce(), tenant: tenantB });
    expect((await whoami(a.access_token)).status).toBe(200);
    const off = await adminCall("POST", `/admin/tenants/${tenantA}/offboard`, { body: { confirm: tenantA } });
    expect(off.status).toBe(202);
    expect(off.body.oauthGrants).toEqual({ revoked: 1, complete: true });
    expect(await grantsOf(tenantA)).toEqual([]);
    expect(await tokensOf(tenantA)).toEqual([]);
    const refresh = await redeem({ grant_type: "refresh_token", refresh_token: a.refresh_token, client_id: clientId });
    expect(refresh.status).toBe(400);
    expect(refresh.body.error).toBe("invalid_grant");
    expect((await whoami(a.access_token)).status).toBe(401);
    const again = await signIn(authorizeQuery({ clientId, pkce: await pkce() }), tenantA, "alice");
    expect(again.status).toBe(403);
    expect(again.html).toContain("offboarded");
    expect(await grantsOf(tenantA)).toEqual([]);
    // The other tenant's grant, token and refresh are untouched.
    expect(await whoami(b.access_token)).toMatchObject({ status: 200, identity: { tenant: tenantB } });
    const refreshB = await redeem({ grant_type: "refresh_token", refresh_token: b.refresh_token, client_id: clientId });
    expect(refreshB.status).toBe(200);
  });

  it("dev sign-in in production: refused (403 page), no grant, while metadata is still served", async () => {
    const clientId = await registerClient();
    const prod = { ...env, ENVIRONMENT: "production", OAUTH_SERVER: "on" };
    const call = (request: Request) => worker.fetch(request, prod, createExecutionContext());
    const query = authorizeQuery({ clientId, pkce: await pkce() });
    const page = await call(new Request(`${BASE}/authorize?${query}`));
    expect(page.status).toBe(403);
    expect(await page.text()).toContain("disabled");
    const post = await call(
      new Request(`${BASE}/authorize?${query}`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: "step=signin&tenant=oa-prod&subject=alice",
      }),
    );
    expect(post.status).toBe(403);
    expect(await grantsOf("oa-prod")).toEqual([]);
    const metadata = await call(new Request(`${BASE}/.well-known/oauth-authorization-server`));
    expect(metadata.status).toBe(200);
  });

  it("the consent page shows client, tenant and scopes, escaped", async () => {
    const clientId = await registerClient({ client_name: `<script>alert(1)</script>"Evil"` });
    const consent = await signIn(authorizeQuery({ clientId, pkce: await pkce(), scope: "mcp" }), "oa-page", "al<b>");
    expect(consent.status).toBe(200);
    expect(consent.html).not.toContain("<script>");
    expect(consent.html).toContain("&#60;script&#62;alert(1)&#60;/script&#62;");
    expect(consent.html).toContain("oa-page");
    expect(consent.html).toContain("al&#60;b&#62;");
    expect(consent.html).toContain("not verified");
    expect(consent.html).toContain("127.0.0.1");
    expect(consent.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
  });
});
