import { describe, expect, it } from "vitest";
import {
  asFetch,
  authorize,
  kvKeys,
  pkce,
  REDIRECT,
  redeem,
  registerClient,
  tokensFor,
  whoami,
} from "../helpers/oauth";
import { mintToken, RESOURCE } from "../helpers/tokens";

describe("built-in authorization server", () => {
  it("publishes RFC 8414 metadata and is advertised by the protected resource metadata", async () => {
    const prm = (await (await asFetch("/.well-known/oauth-protected-resource/mcp")).json()) as Record<string, unknown>;
    expect((prm.authorization_servers as string[])[0]).toBe("https://kb.test");
    const response = await asFetch("/.well-known/oauth-authorization-server");
    expect(response.status).toBe(200);
    const metadata = (await response.json()) as Record<string, unknown>;
    expect(metadata).toMatchObject({
      issuer: "https://kb.test",
      authorization_endpoint: "https://kb.test/authorize",
      token_endpoint: "https://kb.test/token",
      registration_endpoint: "https://kb.test/register",
      code_challenge_methods_supported: ["S256"],
      client_id_metadata_document_supported: true,
    });
  });

  it("issues tokens bound to the tenant chosen at sign-in; JWTs keep working alongside", async () => {
    const clientId = await registerClient();
    const verifier = await pkce();
    const { state } = await authorize({ clientId, pkce: verifier, tenant: "oa-flow", state: "s-1" }).then((r) => ({
      state: r.state,
    }));
    expect(state).toBe("s-1");
    const tokens = await tokensFor({ clientId, pkce: await pkce(), tenant: "oa-flow", subject: "bob" });
    expect(tokens.scope.split(" ").sort()).toEqual(["kb.read", "mcp"]);
    expect(await whoami(tokens.access_token)).toMatchObject({
      status: 200,
      identity: { tenant: "oa-flow", subject: "bob" },
    });
    // Grants and tokens are keyed under the tenant.
    expect((await kvKeys("grant:oa-flow/")).length).toBeGreaterThanOrEqual(1);
    expect((await kvKeys("token:oa-flow/")).length).toBeGreaterThanOrEqual(1);
    const jwt = await mintToken({ tenant: "oa-flow-jwt" });
    expect(await whoami(jwt)).toMatchObject({ status: 200, identity: { tenant: "oa-flow-jwt" } });
  });

  it("rotates refresh tokens and revokes", async () => {
    const clientId = await registerClient();
    const tokens = await tokensFor({ clientId, pkce: await pkce(), tenant: "oa-refresh" });
    const first = await redeem({
      grant_type: "refresh_token",
      refresh_token: tokens.refresh_token,
      client_id: clientId,
    });
    expect(first.status).toBe(200);
    const rotated = first.body as { access_token: string; refresh_token: string };
    expect(rotated.refresh_token).not.toBe(tokens.refresh_token);
    expect((await whoami(rotated.access_token)).status).toBe(200);
    // Using the new one retires the old one.
    const second = await redeem({
      grant_type: "refresh_token",
      refresh_token: rotated.refresh_token,
      client_id: clientId,
    });
    expect(second.status).toBe(200);
    const old = await redeem({ grant_type: "refresh_token", refresh_token: tokens.refresh_token, client_id: clientId });
    expect(old.status).toBe(400);
    expect(old.body.error).toBe("invalid_grant");
    // RFC 7009 revocation at the token endpoint.
    const latest = second.body as { access_token: string };
    const revoke = await asFetch("/token", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token: latest.access_token, client_id: clientId }).toString(),
    });
    expect(revoke.status).toBe(200);
    expect((await whoami(latest.access_token)).status).toBe(401);
  });

  it("answers 401 with a challenge pointing at the resource metadata", async () => {
    const response = await asFetch("/mcp", { method: "POST" });
    expect(response.status).toBe(401);
    expect(response.headers.get("www-authenticate")).toContain(
      'resource_metadata="https://kb.test/.well-known/oauth-protected-resource/mcp"',
    );
    expect(RESOURCE).toBe("https://kb.test/mcp");
    expect(REDIRECT).toMatch(/^http:\/\/127\.0\.0\.1/);
  });
});
