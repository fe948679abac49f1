import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { tenantStub } from "../helpers/admin";
import { kbCaller, uniqueTenant } from "../helpers/kb-client";
import { initializeBody, mcpFetch, rpcResult } from "../helpers/mcp-http";

/**
 * A tenant whose data key cannot be unwrapped (a copy restored after its master epoch's secret was deleted; here
 * the key row is relabelled with an epoch that has no secret) fails closed with the documented 503
 * ERR_KEY_UNAVAILABLE in both client eras, never with a generic 500 and never with data.
 */
describe("a tenant whose keys cannot be opened", () => {
  it("is refused with ERR_KEY_UNAVAILABLE by a 2025 initialize and a 2026 tool call alike", async () => {
    const tenant = uniqueTenant("nokey");
    const caller = await kbCaller(tenant);
    await caller.ok("add_atoms", { atoms: [{ id: "a1", text: "harbour ledger 482910" }] });
    const stub = tenantStub(tenant);
    await runInDurableObject(stub, (_instance, state) => {
      state.storage.sql.exec(`UPDATE tenant_keys SET epoch = 'gone' WHERE tenant = ?`, tenant);
    });
    await evictDurableObject(stub); // the unwrapped key lived only in the evicted instance's memory

    const legacy = await mcpFetch({ method: "POST", token: caller.token, body: initializeBody() });
    const legacyText = await legacy.text();
    expect(legacy.status, legacyText).toBe(503);
    expect(legacy.headers.get("mcp-session-id")).toBeNull();
    const legacyBody = await rpcResult(new Response(legacyText));
    expect(legacyBody.error).toMatchObject({ data: { code: "ERR_KEY_UNAVAILABLE" } });

    const modern = await caller.rpc("tools/call", { name: "search", arguments: { query: "harbour", top_k: 1 } });
    expect(modern.status, modern.text).toBe(503);
    expect(modern.body.error).toMatchObject({ data: { code: "ERR_KEY_UNAVAILABLE" } });
    for (const text of [legacyText, modern.text]) expect(text).not.toContain("482910");
  });
});
