import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import { adminCall } from "../helpers/admin";
import { authorizeQuery, kvKeys, pkce, registerClient } from "../helpers/oauth";
import { BASE } from "../helpers/tokens";

/** With an upstream configured (its endpoints are never reached in these tests: every refusal comes first). */
const withUpstream = { ...env, OAUTH_UPSTREAM_ISSUER: "https://idp.test", OAUTH_UPSTREAM_CLIENT_ID: "kb" };
const call = (path: string, init: RequestInit = {}) =>
  worker.fetch(new Request(`${BASE}${path}`, { redirect: "manual", ...init }), withUpstream, createExecutionContext());

describe("upstream sign-in routes", () => {
  it("the sign-in page offers the organization sign-in; the callback refuses unknown or foreign state", async () => {
    const clientId = await registerClient();
    const query = authorizeQuery({ clientId, pkce: await pkce() });
    const page = await call(`/authorize?${query}`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain(`href="/authorize/upstream?`);
    for (const path of ["/authorize/callback?code=x&state=unknown", "/authorize/callback?code=x"]) {
      const answer = await call(path);
      expect(answer.status, path).toBe(400);
      expect(await answer.text()).toContain("expired or was already used");
    }
    expect(await kvKeys("grant:")).toEqual([]);
  });

  it("the upstream start validates the client's request first (no redirect for a bad redirect_uri)", async () => {
    const clientId = await registerClient();
    const query = authorizeQuery({ clientId, pkce: await pkce(), redirectUri: "https://evil.test/cb" });
    const answer = await call(`/authorize/upstream?${query}`);
    expect(answer.status).toBe(400);
    expect(answer.headers.get("location")).toBeNull();
  });
});

describe("email domain mapping (admin API)", () => {
  it("sets, lists and removes mappings; refuses bad domains and tenants, and tenant tokens", async () => {
    expect(
      (await adminCall("PUT", "/admin/oauth/email-domains/corp.example", { body: { tenant: "acme" } })).status,
    ).toBe(200);
    const listed = await adminCall("GET", "/admin/oauth/email-domains");
    expect(listed.body.domains).toEqual([{ domain: "corp.example", tenant: "acme" }]);
    expect(
      (await adminCall("PUT", "/admin/oauth/email-domains/not_a_domain", { body: { tenant: "acme" } })).status,
    ).toBe(400);
    expect((await adminCall("PUT", "/admin/oauth/email-domains/x.example", { body: { tenant: "admin" } })).status).toBe(
      400,
    );
    expect((await adminCall("PUT", "/admin/oauth/email-domains/x.example", { token: null, body: {} })).status).toBe(
      401,
    );
    expect((await adminCall("DELETE", "/admin/oauth/email-domains/corp.example")).status).toBe(200);
    expect((await adminCall("GET", "/admin/oauth/email-domains")).body.domains).toEqual([]);
  });
});
