import { describe, expect, it } from "vitest";
import { initializeBody, mcpFetch, rpcResult } from "./helpers/mcp-http";
import { mintToken } from "./helpers/tokens";

describe("smoke", () => {
  it("initializes a legacy session and calls whoami", async () => {
    const token = await mintToken({ tenant: "smoke-a" });
    const init = await mcpFetch({ method: "POST", token, body: initializeBody() });
    expect(init.status).toBe(200);
    const sid = init.headers.get("mcp-session-id");
    expect(sid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const body = await rpcResult(init);
    expect(body).toMatchObject({ result: { protocolVersion: "2025-11-25" } });
    const call = await mcpFetch({
      method: "POST",
      token,
      headers: { "mcp-session-id": sid ?? "", "mcp-protocol-version": "2025-11-25" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "whoami", arguments: {} } }),
    });
    expect(call.status).toBe(200);
    const result = await rpcResult(call);
    expect(result).toMatchObject({ result: { structuredContent: { tenant: "smoke-a", subject: "alice" } } });
  });
});
