import { SdkError, SdkErrorCode } from "@modelcontextprotocol/client";
import { decodeJwt } from "jose";
import { describe, expect, it } from "vitest";
import {
  connectModernClient,
  connectV1Client,
  type Exchange,
  MODERN_VERSION,
  modernRequest,
  rpcMessages,
  tokenParts,
} from "../helpers/clients";
import { LEGACY_VERSION, mcpFetch, rpcResult } from "../helpers/mcp-http";
import { mintToken } from "../helpers/tokens";

/**
 * Real MCP clients, in-process: the `@modelcontextprotocol/client` v2 client pinned to 2026-07-28 (stateless,
 * `server/discover`) and the `@modelcontextprotocol/sdk` v1 client (2025-11-25, `initialize` + Mcp-Session-Id),
 * both over their Streamable HTTP transports with a fetch that routes to the Worker's default export.
 */

interface Caller {
  readonly tenant: string;
  readonly sub: string;
  readonly scope: string;
}

const WhoamiKeys = ["tenant", "subject", "scopes", "protocolVersion", "era", "tokenExpiresAt"];

function whoamiOf(result: unknown): Record<string, unknown> {
  const { structuredContent, content } = result as {
    structuredContent?: Record<string, unknown>;
    content?: { type: string; text?: string }[];
  };
  expect(structuredContent).toBeDefined();
  const text = content?.find((block) => block.type === "text")?.text;
  expect(text).toBeDefined();
  // The text block mirrors the structured result exactly.
  expect(JSON.parse(text ?? "null")).toEqual(structuredContent);
  expect(Object.keys(structuredContent ?? {}).sort()).toEqual([...WhoamiKeys].sort());
  return structuredContent ?? {};
}

function expectWhoami(
  info: Record<string, unknown>,
  caller: Caller,
  token: string,
  protocolVersion: string,
  era: string,
): void {
  const exp = decodeJwt(token).exp ?? 0;
  expect(info).toEqual({
    tenant: caller.tenant,
    subject: caller.sub,
    scopes: caller.scope.split(" "),
    protocolVersion,
    era,
    tokenExpiresAt: new Date(exp * 1000).toISOString(),
  });
}

/** Neither the token nor any of its segments nor its jti may appear in anything the server sent back. */
async function expectNoTokenLeak(token: string, values: unknown[], exchanges: Exchange[]): Promise<void> {
  const jti = decodeJwt(token).jti;
  expect(jti).toBeTypeOf("string");
  const needles = [...tokenParts(token), String(jti)];
  const haystacks = values.map((value) => JSON.stringify(value));
  for (const exchange of exchanges) {
    haystacks.push(await exchange.responseBody, JSON.stringify(exchange.responseHeaders));
  }
  expect(haystacks.length).toBeGreaterThan(values.length);
  for (const haystack of haystacks) {
    for (const needle of needles) expect(haystack.includes(needle)).toBe(false);
  }
}

const CALLERS: readonly Caller[] = [
  { tenant: "clients-acme", sub: "alice", scope: "mcp kb.read" },
  { tenant: "clients-globex", sub: "bob@globex", scope: "mcp kb.read kb.write" },
];

describe("@modelcontextprotocol/client v2 pinned to 2026-07-28", () => {
  for (const caller of CALLERS) {
    it(`lists tools and calls whoami for ${caller.tenant}`, async () => {
      const token = await mintToken({ tenant: caller.tenant, sub: caller.sub, scope: caller.scope });
      const { client, exchanges, close } = await connectModernClient(token);
      try {
        expect(client.getNegotiatedProtocolVersion()).toBe(MODERN_VERSION);
        expect(client.getProtocolEra()).toBe("modern");
        expect(client.getServerVersion()).toEqual({ name: "tenant-mcp-kb", version: "0.1.0" });
        // The connect-time probe was `server/discover`, never `initialize`.
        expect(exchanges.map((exchange) => JSON.parse(exchange.requestBody).method)).toEqual(["server/discover"]);

        const tools = await client.listTools();
        expect(tools.tools.map((tool) => tool.name)).toContain("whoami");
        expect(tools.cacheScope).toBe("private");

        // The raw wire result of tools/list carries cacheScope "private" (and no shared-cache lifetime).
        const listExchange = exchanges.find((exchange) => JSON.parse(exchange.requestBody).method === "tools/list");
        expect(listExchange).toBeDefined();
        if (!listExchange) return;
        expect(listExchange.status).toBe(200);
        expect(listExchange.requestHeaders["mcp-method"]).toBe("tools/list");
        expect(listExchange.requestHeaders["mcp-protocol-version"]).toBe(MODERN_VERSION);
        const [listMessage] = rpcMessages(
          await listExchange.responseBody,
          listExchange.responseHeaders["content-type"],
        );
        expect(listMessage).toMatchObject({ result: { cacheScope: "private", ttlMs: 0 } });
        // server/discover is tenant-specific too.
        const discoverExchange = exchanges[0];
        const [discoverMessage] = rpcMessages(
          (await discoverExchange?.responseBody) ?? "",
          discoverExchange?.responseHeaders["content-type"],
        );
        expect(discoverMessage).toMatchObject({
          result: { cacheScope: "private", supportedVersions: [MODERN_VERSION] },
        });

        const result = await client.callTool({ name: "whoami", arguments: {} });
        expect(result.isError).not.toBe(true);
        const info = whoamiOf(result);
        expectWhoami(info, caller, token, MODERN_VERSION, "modern");
        const callExchange = exchanges.at(-1);
        expect(callExchange?.requestHeaders["mcp-method"]).toBe("tools/call");
        expect(callExchange?.requestHeaders["mcp-name"]).toBe("whoami");

        // Stateless era: no session id is ever handed out.
        for (const exchange of exchanges) expect(exchange.responseHeaders["mcp-session-id"]).toBeUndefined();
        await expectNoTokenLeak(token, [tools, result, client.getDiscoverResult()], exchanges);
      } finally {
        await close();
      }
    });
  }

  it("has no ping in 2026-07-28: the client refuses it locally, server/discover is the liveness check", async () => {
    const token = await mintToken({ tenant: "clients-ping-modern" });
    const { client, exchanges, close } = await connectModernClient(token);
    try {
      const before = exchanges.length;
      const error = await client.ping().then(
        () => null,
        (reason: unknown) => reason,
      );
      expect(error).toBeInstanceOf(SdkError);
      expect((error as SdkError).code).toBe(SdkErrorCode.MethodNotSupportedByProtocolVersion);
      expect(exchanges.length).toBe(before);

      const discover = await client.discover();
      expect(discover.supportedVersions).toContain(MODERN_VERSION);
      expect(exchanges.length).toBe(before + 1);
      expect(exchanges.at(-1)?.status).toBe(200);

      // A raw 2026-07-28 `ping` is answered with JSON-RPC "method not found" (not silently accepted).
      const raw = modernRequest(9, "ping");
      const response = await mcpFetch({ method: "POST", token, headers: raw.headers, body: raw.body });
      expect(await rpcResult(response)).toMatchObject({ id: 9, error: { code: -32601 } });
    } finally {
      await close();
    }
  });
});

describe("@modelcontextprotocol/sdk v1 client (2025-11-25, sessions)", () => {
  for (const caller of CALLERS) {
    it(`lists tools and calls whoami for ${caller.tenant}`, async () => {
      const token = await mintToken({ tenant: caller.tenant, sub: caller.sub, scope: caller.scope });
      const { client, transport, exchanges, close } = await connectV1Client(token);
      try {
        expect(transport.protocolVersion).toBe(LEGACY_VERSION);
        expect(client.getServerVersion()).toEqual({ name: "tenant-mcp-kb", version: "0.1.0" });
        const sessionId = transport.sessionId;
        expect(sessionId).toMatch(/^[A-Za-z0-9_-]{43}$/);
        expect(JSON.parse(exchanges[0]?.requestBody ?? "{}").method).toBe("initialize");
        expect(exchanges[0]?.responseHeaders["mcp-session-id"]).toBe(sessionId);

        const tools = await client.listTools();
        expect(tools.tools.map((tool) => tool.name)).toContain("whoami");

        const result = await client.callTool({ name: "whoami", arguments: {} });
        expect(result.isError).not.toBe(true);
        expectWhoami(whoamiOf(result), caller, token, LEGACY_VERSION, "legacy");

        // Every request after initialize carried the session id and the negotiated version.
        const posts = exchanges.filter((exchange) => exchange.method === "POST").slice(1);
        expect(posts.length).toBeGreaterThanOrEqual(3);
        for (const exchange of posts) {
          expect(exchange.requestHeaders["mcp-session-id"]).toBe(sessionId);
          expect(exchange.requestHeaders["mcp-protocol-version"]).toBe(LEGACY_VERSION);
          expect(exchange.status).toBeLessThan(300);
        }
        await expectNoTokenLeak(token, [tools, result], exchanges);
      } finally {
        await close();
      }
    });
  }

  it("pings, and terminateSession ends the session (DELETE 204, then 404)", async () => {
    const token = await mintToken({ tenant: "clients-ping-v1", sub: "carol" });
    const { client, transport, exchanges, close } = await connectV1Client(token);
    try {
      expect(await client.ping()).toEqual({});
      const pingExchange = exchanges.at(-1);
      expect(JSON.parse(pingExchange?.requestBody ?? "{}").method).toBe("ping");
      expect(pingExchange?.status).toBe(200);

      const sessionId = transport.sessionId ?? "";
      expect(sessionId).toMatch(/^[A-Za-z0-9_-]{43}$/);
      await transport.terminateSession();
      const deleteExchange = exchanges.at(-1);
      expect(deleteExchange?.method).toBe("DELETE");
      expect(deleteExchange?.status).toBe(204);
      expect(transport.sessionId).toBeUndefined();

      const after = await mcpFetch({
        method: "POST",
        token,
        headers: { "mcp-session-id": sessionId, "mcp-protocol-version": LEGACY_VERSION },
        body: JSON.stringify({ jsonrpc: "2.0", id: 5, method: "ping" }),
      });
      expect(after.status).toBe(404);
    } finally {
      await close();
    }
  });
});

describe("both clients side by side", () => {
  it("interleaved calls of two tenants on both eras each see only their own identity", async () => {
    const callers = CALLERS.map((caller) => ({ ...caller, tenant: `${caller.tenant}-mix` }));
    const tokens = await Promise.all(
      callers.map((caller) => mintToken({ tenant: caller.tenant, sub: caller.sub, scope: caller.scope })),
    );
    const connections = await Promise.all(
      tokens.flatMap((token) => [connectModernClient(token), connectV1Client(token)] as const),
    );
    try {
      for (let round = 0; round < 3; round++) {
        const results = await Promise.all(
          connections.map((connection) => connection.client.callTool({ name: "whoami", arguments: {} })),
        );
        results.forEach((result, index) => {
          const caller = callers[Math.floor(index / 2)];
          const token = tokens[Math.floor(index / 2)];
          if (!caller || !token) throw new Error("index out of range");
          const modern = index % 2 === 0;
          expectWhoami(
            whoamiOf(result),
            caller,
            token,
            modern ? MODERN_VERSION : LEGACY_VERSION,
            modern ? "modern" : "legacy",
          );
        });
      }
    } finally {
      await Promise.all(connections.map((connection) => connection.close()));
    }
  });
});
