import { describe, expect, it } from "vitest";
import { exchangeForm, expectOAuthError, setEgress, tokenRequest } from "../helpers/exchange";
import { tenantObjectExists } from "../helpers/http";
import { initializeBody, mcpFetch } from "../helpers/mcp-http";
import { mintToken } from "../helpers/tokens";

/**
 * Issue 11 item 5: /oauth/token requires the scopes /mcp requires (REQUIRED_SCOPES, `mcp` here). A subject token
 * without them was exchanged before; now it is `invalid_grant` at the edge and no tenant object is reached.
 */
const DOWNSTREAM = "https://api.scopes.test/v1";
const unique = (label: string) => `xs-${label}-${crypto.randomUUID().slice(0, 8)}`;

async function servedTenant(label: string): Promise<string> {
  const tenant = unique(label);
  const first = await mcpFetch({ method: "POST", token: await mintToken({ tenant }), body: initializeBody() });
  expect(first.status, await first.text()).toBe(200);
  await setEgress(tenant, {
    origins: ["https://api.scopes.test"],
    resources: [{ resource: DOWNSTREAM, scopes: ["docs.read"] }],
  });
  return tenant;
}

describe("/oauth/token requires REQUIRED_SCOPES", () => {
  it("a subject token without `mcp` is refused with invalid_grant, no token issued", async () => {
    const tenant = await servedTenant("no-mcp");
    const token = await mintToken({ tenant, scope: "docs.read kb.read" });
    const answer = await tokenRequest(exchangeForm(token, { resource: DOWNSTREAM }));
    expectOAuthError(answer, "invalid_grant");
    expect(answer.body.error_description).toContain("mcp");
    // The same token with `mcp` is exchanged (the refusal above was the scope, not the target).
    const ok = await tokenRequest(
      exchangeForm(await mintToken({ tenant, scope: "mcp docs.read" }), { resource: DOWNSTREAM }),
    );
    expect(ok.status, ok.text).toBe(200);
  });

  it("the refusal happens at the edge: a never-served tenant's object is not created", async () => {
    const tenant = unique("edge");
    const token = await mintToken({ tenant, scope: "docs.read" });
    expectOAuthError(await tokenRequest(exchangeForm(token, { resource: DOWNSTREAM })), "invalid_grant");
    expect(await tenantObjectExists(tenant)).toBe(false);
  });

  it("/mcp refuses the same token (403 insufficient_scope): the two endpoints agree", async () => {
    const token = await mintToken({ tenant: unique("agree"), scope: "docs.read" });
    const response = await mcpFetch({ method: "POST", token, body: initializeBody() });
    expect(response.status).toBe(403);
    await response.body?.cancel();
  });
});
