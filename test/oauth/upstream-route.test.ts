import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
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

afterEach(() => {
  vi.restoreAllMocks();
});

describe("upstream state is single-use and bound to the browser that started it", () => {
  it("a callback without the binding cookie is refused without spending the state; a replay redeems nothing", async () => {
    const fetched: string[] = [];
    vi.spyOn(globalThis, "fetch").mockImplementation(async (input) => {
      const url = input instanceof Request ? input.url : String(input);
      fetched.push(url);
      if (url === "https://idp.test/.well-known/openid-configuration") {
        return Response.json({
          issuer: "https://idp.test",
          authorization_endpoint: "https://idp.test/auth",
          token_endpoint: "https://idp.test/token",
          jwks_uri: "https://idp.test/jwks",
        });
      }
      return new Response("unexpected", { status: 500 });
    });
    const clientId = await registerClient();
    const start = await call(`/authorize/upstream?${authorizeQuery({ clientId, pkce: await pkce() })}`);
    expect(start.status).toBe(302);
    const location = new URL(start.headers.get("location") ?? "");
    expect(location.origin).toBe("https://idp.test");
    expect(location.searchParams.get("code_challenge_method")).toBe("S256");
    expect(location.searchParams.get("nonce")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const state = location.searchParams.get("state") ?? "";
    const cookie = (start.headers.get("set-cookie") ?? "").split(";")[0] ?? "";
    expect(cookie).toMatch(/^__Host-kb-upstream=/);
    const foreign = await call(`/authorize/callback?code=c&state=${state}`, {
      headers: { cookie: "__Host-kb-upstream=x" },
    });
    expect(foreign.status).toBe(400);
    expect(await foreign.text()).toContain("another browser");
    expect(fetched.some((url) => url.startsWith("https://idp.test/token"))).toBe(false);
    // The foreign attempt did not spend the state (whoever learnt it cannot burn the user's sign-in): the right
    // browser's callback gets past the binding and spends it (here the provider's token endpoint then fails).
    const own = await call(`/authorize/callback?code=c&state=${state}`, { headers: { cookie } });
    expect(await own.text()).not.toContain("another browser");
    expect(fetched.some((url) => url.startsWith("https://idp.test/token"))).toBe(true);
    // Replayed after that: refused before any code is redeemed again.
    const redeemed = fetched.filter((url) => url.startsWith("https://idp.test/token")).length;
    const replay = await call(`/authorize/callback?code=c&state=${state}`, { headers: { cookie } });
    expect(replay.status).toBe(400);
    expect(await replay.text()).toContain("expired or was already used");
    expect(fetched.filter((url) => url.startsWith("https://idp.test/token")).length).toBe(redeemed);
    expect(await kvKeys("grant:")).toEqual([]);
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
