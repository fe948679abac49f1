import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config";
import { ExchangedTokens } from "../../src/egress/token-provider";
import { QuotaError } from "../../src/errors";
import { RequestRate, TokenBucket } from "../../src/tenant/quotas";
import { adminCall, holdTenantAlarms, putDocument, tenantStub } from "../helpers/admin";
import { kbCaller, uniqueTenant } from "../helpers/kb-client";
import { initializeBody, mcpFetch, rpcResult } from "../helpers/mcp-http";
import { mintToken } from "../helpers/tokens";
import { docBytes } from "./fixtures";

/**
 * Per-tenant quotas (src/tenant/quotas.ts): over a quota a request is refused with 429, Retry-After and a JSON-RPC
 * error, nothing is written, and every other tenant is unaffected.
 */

/** Gives a fresh tenant's object its own limits (its env is read per request; the tenant has not been served yet). */
async function withLimits(tenant: string, vars: Record<string, string>): Promise<void> {
  await runInDurableObject(tenantStub(tenant), (instance) => {
    const holder = instance as unknown as { env: Record<string, unknown> };
    holder.env = { ...holder.env, ...vars };
  });
}

describe("token bucket", () => {
  it("admits the burst, then refuses with the seconds to wait, and refills with time", () => {
    const bucket = new TokenBucket(60, 0);
    for (let i = 0; i < 60; i++) expect(bucket.take(0)).toBeNull();
    expect(bucket.take(0)).toBe(1);
    expect(bucket.take(500)).toBe(1);
    expect(bucket.take(1000)).toBeNull();
    expect(bucket.take(1000)).toBe(1);
  });

  it("limits each subject and the tenant as a whole", () => {
    const limits = { ...loadConfig(env).quotas, requestsPerMinute: 5, subjectRequestsPerMinute: 3 };
    const rate = new RequestRate(limits);
    for (let i = 0; i < 3; i++) rate.admit("alice", 0);
    expect(() => rate.admit("alice", 0)).toThrow(QuotaError);
    rate.admit("bob", 0);
    rate.admit("bob", 0);
    // The tenant's 5 are used (3 + 2): a third subject is refused too.
    let refused: unknown;
    try {
      rate.admit("carol", 0);
    } catch (error) {
      refused = error;
    }
    expect(refused).toBeInstanceOf(QuotaError);
    expect((refused as QuotaError).code).toBe("ERR_RATE_LIMITED");
    expect((refused as QuotaError).retryAfterS).toBeGreaterThanOrEqual(1);
  });
});

describe("request rate per subject and per tenant", () => {
  it("answers 429 with Retry-After and a JSON-RPC error, writes nothing, and leaves other tenants alone", async () => {
    const tenant = uniqueTenant("quota-rate");
    const other = uniqueTenant("quota-rate-other");
    await withLimits(tenant, { RATE_LIMIT_SUBJECT_PER_MINUTE: "4", RATE_LIMIT_PER_MINUTE: "6" });
    const alice = await kbCaller(tenant);
    const bob = await kbCaller(tenant, { sub: "bob" });
    const neighbour = await kbCaller(other);
    await alice.ok("add_atoms", { atoms: [{ id: "a1", text: "heron by the river" }] });
    for (let i = 0; i < 3; i++) await alice.ok("whoami", {});

    const refused = await alice.rpc("tools/call", {
      name: "add_atoms",
      arguments: { atoms: [{ id: "a2", text: "written over the quota" }] },
    });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(refused.body).toMatchObject({ jsonrpc: "2.0", error: { data: { code: "ERR_RATE_LIMITED" } } });
    expect(refused.text).not.toMatch(/at \w+ \(|stack/);

    // Another subject has its own bucket, within the tenant's.
    await bob.ok("whoami", {});
    await bob.ok("whoami", {});
    expect((await bob.rpc("tools/call", { name: "whoami", arguments: {} })).status).toBe(429);

    // Another tenant is unaffected.
    for (let i = 0; i < 10; i++) await neighbour.ok("whoami", {});

    // Nothing was written by the refused call.
    const stored = await runInDurableObject(tenantStub(tenant), (_instance, state) =>
      state.storage.sql
        .exec<{ id: string }>(`SELECT id FROM atoms ORDER BY id`)
        .toArray()
        .map((row) => row.id),
    );
    expect(stored).toEqual(["a1"]);
  });
});

describe("live sessions across a tenant's subjects", () => {
  it("refuses a new session over the tenant's quota (429), while a subject at its own bound replaces its oldest", async () => {
    const tenant = uniqueTenant("quota-sessions");
    await withLimits(tenant, { QUOTA_SESSIONS: "3" });
    const tokens = await Promise.all(["s1", "s2", "s3", "s4"].map((sub) => mintToken({ tenant, sub })));
    for (const token of tokens.slice(0, 3)) {
      expect((await mcpFetch({ method: "POST", token, body: initializeBody() })).status).toBe(200);
    }
    const refused = await mcpFetch({ method: "POST", token: tokens[3], body: initializeBody() });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("mcp-session-id")).toBeNull();
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(await rpcResult(refused)).toMatchObject({ error: { data: { code: "ERR_QUOTA" } } });
    const count = await runInDurableObject(
      tenantStub(tenant),
      (_instance, state) => state.storage.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM mcp_sessions`).one().n,
    );
    expect(count).toBe(3);
    // Another tenant opens sessions as usual.
    const other = await mintToken({ tenant: uniqueTenant("quota-sessions-other"), sub: "s4" });
    expect((await mcpFetch({ method: "POST", token: other, body: initializeBody() })).status).toBe(200);
    // The admin status shows usage against the quota.
    const status = await adminCall("GET", `/admin/tenants/${tenant}`);
    expect(status.body).toMatchObject({ quotas: { sessions: { used: 3, limit: 3 } } });
  });
});

describe("cached exchanged tokens", () => {
  it("are bounded per tenant: beyond the quota the oldest are evicted, never refused", async () => {
    const config = { ...loadConfig(env), quotas: { ...loadConfig(env).quotas, exchangedTokens: 2 } };
    let signed = 0;
    const tokens = new ExchangedTokens("quota-tokens", config, {
      sign: async () => `token-${++signed}`,
    });
    const identity = {
      tenant: "quota-tokens",
      subject: "alice",
      scopes: ["mcp", "docs.read"],
      tokenId: null,
      expiresAt: 0,
      issuedAt: 0,
    };
    const target = (n: number) => ({
      resource: `https://api${n}.example.com/`,
      audience: `api${n}`,
      scopes: ["docs.read"],
    });
    for (let n = 0; n < 5; n++) await tokens.tokenFor(identity, target(n));
    expect(tokens.size).toBe(2);
    // The most recent ones are kept (no new signing), the oldest had to be signed again.
    expect(await tokens.tokenFor(identity, target(4))).toBe("token-5");
    expect(await tokens.tokenFor(identity, target(0))).toBe("token-6");
    expect(tokens.size).toBe(2);
  });
});

describe("documents and extraction runs", () => {
  it("a document over the count or byte quota is 429 with Retry-After, and nothing is stored", async () => {
    const tenant = uniqueTenant("quota-docs");
    await withLimits(tenant, { QUOTA_DOCUMENTS: "2", QUOTA_DOCUMENT_BYTES: "3000" });
    const caller = await kbCaller(tenant);
    expect((await putDocument(caller.token, "d1", docBytes(1, 1000), "application/octet-stream")).status).toBe(201);
    expect((await putDocument(caller.token, "d2", docBytes(2, 1000), "application/octet-stream")).status).toBe(201);
    // Replacing an existing document within the bytes quota is fine.
    expect((await putDocument(caller.token, "d2", docBytes(3, 1500), "application/octet-stream")).status).toBe(201);
    const overCount = await putDocument(caller.token, "d3", docBytes(4, 10), "application/octet-stream");
    expect(overCount.status).toBe(429);
    expect(Number(overCount.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(await overCount.json()).toMatchObject({ error: { data: { code: "ERR_QUOTA" } } });
    const overBytes = await putDocument(caller.token, "d2", docBytes(5, 2600), "application/octet-stream");
    expect(overBytes.status).toBe(429);
    // Nothing written: the rows and the bytes are the ones acknowledged before.
    const rows = await runInDurableObject(tenantStub(tenant), (_instance, state) =>
      state.storage.sql
        .exec<{ id: string; size: number }>(`SELECT id, size FROM documents ORDER BY id`)
        .toArray()
        .map((row) => ({ ...row })),
    );
    expect(rows).toEqual([
      { id: "d1", size: 1000 },
      { id: "d2", size: 1500 },
    ]);
    expect((await env.DOCS.list({ prefix: `t/${tenant}/docs/d3` })).objects).toEqual([]);
    const status = await adminCall("GET", `/admin/tenants/${tenant}`);
    expect(status.body).toMatchObject({
      quotas: { documents: { used: 2, limit: 2 }, documentBytes: { used: 2500, limit: 3000 } },
    });
  });

  it("queued and running extraction runs are bounded per tenant", async () => {
    const tenant = uniqueTenant("quota-runs");
    await withLimits(tenant, { QUOTA_RUNS_QUEUED: "1" });
    const caller = await kbCaller(tenant);
    await caller.ok("put_document", { id: "notes", text: "# Notes\n\nThe owl hunts at night.\n" });
    await holdTenantAlarms(tenant);
    expect(await caller.ok("ingest_document", { document_id: "notes", wait: false })).toMatchObject({
      status: "queued",
    });
    const refused = await caller.call("ingest_document", { document_id: "notes", wait: false });
    expect(refused.isError).toBe(true);
    expect(refused.structuredContent).toMatchObject({ error: { code: "ERR_QUOTA" } });
    const runs = await runInDurableObject(
      tenantStub(tenant),
      (_instance, state) => state.storage.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM extraction_runs`).one().n,
    );
    expect(runs).toBe(1);
  });
});
