import { describe, expect, it } from "vitest";
import type { EgressPolicy } from "../../src/egress/egress-policy";
import { decideExchange, granted, refused } from "../../src/exchange/exchange-decision";

const policy: EgressPolicy = {
  origins: ["https://crm.example"],
  resources: [
    { resource: "https://crm.example/api", audience: "crm", scopes: ["crm.read", "crm.write"] },
    { resource: "https://wiki.example/", audience: "wiki", scopes: ["wiki.read"] },
  ],
};

describe("decideExchange (the tenant object's RFC 8693 policy decision)", () => {
  it("grants the target's scopes the caller holds, by resource or by audience", () => {
    expect(
      decideExchange(policy, ["mcp", "crm.read"], { resource: "https://crm.example/api", audience: null, scope: null }),
    ).toEqual({ ok: true, target: policy.resources[0], scopes: ["crm.read"] });
    expect(decideExchange(policy, ["wiki.read"], { resource: null, audience: "wiki", scope: ["wiki.read"] })).toEqual({
      ok: true,
      target: policy.resources[1],
      scopes: ["wiki.read"],
    });
  });

  it("refuses a target outside the tenant's policy, and a resource and audience that name different targets", () => {
    for (const request of [
      { resource: "https://evil.example/", audience: null, scope: null },
      { resource: "https://crm.example/api", audience: "wiki", scope: null },
      { resource: null, audience: "other-tenant-crm", scope: null },
    ]) {
      expect(decideExchange(policy, ["crm.read", "wiki.read"], request)).toMatchObject({
        ok: false,
        error: "invalid_target",
      });
    }
  });

  it("refuses scopes that widen the caller's, and an exchange that would carry no scope", () => {
    const crm = { resource: "https://crm.example/api", audience: null };
    expect(decideExchange(policy, ["crm.read"], { ...crm, scope: ["crm.write"] })).toMatchObject({
      ok: false,
      error: "invalid_scope",
    });
    expect(decideExchange(policy, ["crm.read"], { ...crm, scope: ["crm.read", "mcp"] })).toMatchObject({
      ok: false,
      error: "invalid_scope",
    });
    expect(decideExchange(policy, ["mcp"], { ...crm, scope: null })).toMatchObject({
      ok: false,
      error: "invalid_scope",
    });
    expect(decideExchange(policy, ["crm.read"], { ...crm, scope: [] })).toMatchObject({
      ok: false,
      error: "invalid_scope",
    });
  });

  it("shapes the RPC outcome: a success body, or an OAuth error without a token", () => {
    expect(granted("t0k", 300, ["crm.read", "crm.write"])).toEqual({
      error: null,
      description: "",
      response: {
        access_token: "t0k",
        issued_token_type: "urn:ietf:params:oauth:token-type:access_token",
        token_type: "Bearer",
        expires_in: 300,
        scope: "crm.read crm.write",
      },
    });
    expect(refused("invalid_grant", "tenant offboarded")).toEqual({
      response: null,
      error: "invalid_grant",
      description: "tenant offboarded",
    });
  });
});
