import { describe, expect, it } from "vitest";
import { SUPPORTED_PROTOCOL_VERSIONS } from "../../src/http/transport-guards";
import { expectSafeErrorResponse, jsonRpcErrorCode, tenantObjectExists } from "../helpers/http";
import { initializeBody, mcpFetch, rpcResult } from "../helpers/mcp-http";
import { mintToken } from "../helpers/tokens";

/**
 * Issue 11 item 11: the versions `initialize` negotiates and the versions the edge accepts in MCP-Protocol-Version
 * agree. Decision: 2024-11-05 (the HTTP+SSE era) is served in neither; a client asking for it is offered 2025-11-25.
 */
const unique = (label: string) => `pv-${label}-${crypto.randomUUID().slice(0, 8)}`;

async function initialize(token: string, version: string) {
  const response = await mcpFetch({ method: "POST", token, body: initializeBody(1, version) });
  expect(response.status).toBe(200);
  const body = await rpcResult(response);
  const result = body.result as { protocolVersion: string };
  return { sessionId: response.headers.get("mcp-session-id"), version: result.protocolVersion };
}

function toolsList(token: string, sessionId: string, version: string) {
  return mcpFetch({
    method: "POST",
    token,
    headers: { "mcp-session-id": sessionId, "mcp-protocol-version": version },
    body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list", params: {} }),
  });
}

describe("protocol versions agree between initialize and the edge", () => {
  it("initialize asking for 2024-11-05 is answered 2025-11-25, and that version then works", async () => {
    const token = await mintToken({ tenant: unique("old") });
    const { sessionId, version } = await initialize(token, "2024-11-05");
    expect(version).toBe("2025-11-25");
    expect(sessionId).toBeTruthy();
    const next = await toolsList(token, sessionId ?? "", version);
    expect(next.status).toBe(200);
    expect(await rpcResult(next)).toHaveProperty("result.tools");
  });

  it("MCP-Protocol-Version: 2024-11-05 is refused at the edge (400), before any tenant object exists", async () => {
    const tenant = unique("hdr");
    const token = await mintToken({ tenant });
    const response = await mcpFetch({
      method: "POST",
      token,
      headers: { "mcp-protocol-version": "2024-11-05" },
      body: initializeBody(1, "2024-11-05"),
    });
    const body = await expectSafeErrorResponse(response, 400);
    expect(jsonRpcErrorCode(body)).toBe("ERR_PROTOCOL_VERSION");
    expect(await tenantObjectExists(tenant)).toBe(false);
  });

  it.each(["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "1999-01-01", "2030-01-01"])(
    "initialize %s negotiates a version the edge accepts in MCP-Protocol-Version",
    async (asked) => {
      const token = await mintToken({ tenant: unique("any") });
      const { sessionId, version } = await initialize(token, asked);
      expect(SUPPORTED_PROTOCOL_VERSIONS as readonly string[]).toContain(version);
      if ((SUPPORTED_PROTOCOL_VERSIONS as readonly string[]).includes(asked) && asked !== "2024-11-05") {
        expect(version).toBe(asked);
      }
      const next = await toolsList(token, sessionId ?? "", version);
      expect(next.status).toBe(200);
      // Read to the end (a cancelled body makes workerd log the aborted pipe): the answer lists the tools.
      expect(await next.text()).toContain('"tools"');
    },
  );
});
