import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config";
import { KbError } from "../../src/errors";
import {
  grantUserId,
  identityFromGrantToken,
  isAuthorizationServerToken,
  tenantKeyPrefixes,
  tenantOfUserId,
} from "../../src/oauth/grant-user";

const config = loadConfig(env);
const ALICE = await grantUserId("acme", "alice");
const valid = (overrides: Record<string, unknown> = {}) => ({
  props: { tenant: "acme", subject: "alice" },
  audience: "https://kb.test/mcp",
  expiresAt: 2_000_000_000,
  scope: ["mcp", "kb.read"],
  userId: ALICE,
  ...overrides,
});

async function code(fn: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await fn();
  } catch (error) {
    return error instanceof KbError ? error.code : "not a KbError";
  }
  return undefined;
}

describe("grant user ids: the tenant leads, no ':' ever", () => {
  it("digests the subject (bound to the tenant) and refuses invalid or reserved tenants", async () => {
    expect(ALICE).toMatch(/^acme\/[A-Za-z0-9_-]{43}$/);
    expect(ALICE).not.toContain("alice");
    expect(await grantUserId("acme", "alice")).toBe(ALICE);
    expect(await grantUserId("acme", "urn:x:bob/1")).not.toContain(":");
    expect((await grantUserId("acme-2", "alice")).split("/")[1]).not.toBe(ALICE.split("/")[1]);
    expect(await code(() => grantUserId("admin", "alice"))).toBe("ERR_BAD_REQUEST");
    expect(await code(() => grantUserId("Acme", "alice"))).toBe("ERR_BAD_REQUEST");
    expect(await code(() => grantUserId("acme", "a b"))).toBe("ERR_BAD_REQUEST");
    expect(tenantOfUserId("acme/alice")).toBe("acme");
    expect(tenantOfUserId("/alice")).toBeNull();
    expect(tenantOfUserId("registry/x")).toBeNull();
    // One tenant's prefix never covers another's ("acme" vs "acme-2").
    expect(tenantKeyPrefixes("acme")).toEqual({ grants: "grant:acme/", tokens: "token:acme/" });
    expect("grant:acme-2/alice:g".startsWith(tenantKeyPrefixes("acme").grants)).toBe(false);
  });

  it("tells the two token kinds apart by shape", () => {
    expect(isAuthorizationServerToken(`${ALICE}:abc123:s3cr3t_-`)).toBe(true);
    expect(isAuthorizationServerToken("eyJhbGciOi.eyJzdWIi.c2ln")).toBe(false);
    expect(isAuthorizationServerToken("a:b")).toBe(false);
    expect(isAuthorizationServerToken("a:b:c:d")).toBe(false);
  });
});

describe("identityFromGrantToken: the same Identity as a JWT's", () => {
  it("maps tenant, subject, scopes and expiry", async () => {
    const nowS = Math.floor(Date.now() / 1000);
    const identity = await identityFromGrantToken(valid({ expiresAt: nowS + 1000 }), config, "g1");
    expect(identity).toEqual({
      tenant: "acme",
      subject: "alice",
      scopes: ["mcp", "kb.read"],
      tokenId: "grant:g1",
      expiresAt: nowS + 1000,
      issuedAt: nowS + 1000 - 3600,
    });
  });

  it("the issue time is never in the future (a lowered token lifetime cannot date a token past a revocation)", async () => {
    // Issued under a longer lifetime than today's setting: expiry minus today's lifetime would be after now.
    const nowS = Math.floor(Date.now() / 1000);
    const identity = await identityFromGrantToken(valid({ expiresAt: nowS + 80_000 }), config, "g1");
    expect(identity.issuedAt).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
  });

  it.each([
    ["another resource", { audience: "https://other.test/mcp" }, "ERR_TOKEN_AUDIENCE"],
    ["props without a tenant", { props: { subject: "alice" } }, "ERR_TOKEN_TENANT"],
    ["a reserved tenant", { props: { tenant: "admin", subject: "alice" } }, "ERR_TOKEN_TENANT"],
    [
      "props naming another tenant than the grant's user",
      { props: { tenant: "evil", subject: "alice" } },
      "ERR_TOKEN_TENANT",
    ],
    ["props naming another subject", { props: { tenant: "acme", subject: "mallory" } }, "ERR_TOKEN_TENANT"],
    ["no expiry", { expiresAt: Number.NaN }, "ERR_TOKEN_CLAIMS"],
  ])("refuses %s", async (_label, overrides, expected) => {
    expect(await code(() => identityFromGrantToken(valid(overrides), config, "g1"))).toBe(expected);
  });
});
