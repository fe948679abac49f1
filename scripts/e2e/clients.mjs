// Real MCP clients over HTTP: the v2 client pinned to 2026-07-28 (stateless) and the v1 SDK client (2025-11-25,
// sessionful), plus raw-HTTP probes of the session boundary.
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from "@modelcontextprotocol/client";
import { Client as LegacyClient } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport as LegacyTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const MODERN = "2026-07-28";
const LEGACY = "2025-11-25";

const withBearer = (token) => ({ headers: { authorization: `Bearer ${token}` } });

function fail(message) {
  throw new Error(message);
}

async function listsWhoami(client) {
  const { tools } = await client.listTools();
  if (!tools.some((tool) => tool.name === "whoami")) fail(`tools/list lacks whoami: ${tools.map((t) => t.name)}`);
  return tools.length;
}

async function callWhoami(client, expected) {
  const result = await client.callTool({ name: "whoami", arguments: {} });
  const info = result.structuredContent;
  if (result.isError || !info) fail(`whoami failed: ${JSON.stringify(result).slice(0, 300)}`);
  for (const [key, value] of Object.entries(expected)) {
    if (info[key] !== value) fail(`whoami ${key} is ${JSON.stringify(info[key])}, expected ${JSON.stringify(value)}`);
  }
}

/** v2 client pinned to 2026-07-28: served statelessly, so it must not be handed an Mcp-Session-Id. */
export async function modernClientFlow({ url, token, tenant, subject }) {
  const client = new ModernClient(
    { name: "e2e-modern", version: "1.0.0" },
    { versionNegotiation: { mode: { pin: MODERN } } },
  );
  const transport = new ModernTransport(new URL(url), { requestInit: withBearer(token) });
  await client.connect(transport);
  try {
    const version = client.getNegotiatedProtocolVersion();
    if (version !== MODERN) fail(`negotiated ${version}, expected ${MODERN}`);
    if (transport.sessionId) fail("a 2026-07-28 client was given an Mcp-Session-Id");
    const tools = await listsWhoami(client);
    await callWhoami(client, { tenant, subject, protocolVersion: MODERN, era: "modern" });
    return `${MODERN}, stateless, ${tools} tool(s), whoami = ${tenant}/${subject}`;
  } finally {
    await client.close();
  }
}

/** v1 SDK client (2025-11-25). Returns the open session so the caller can probe it, and a way to end it. */
export async function legacyClientFlow({ url, token, tenant, subject }) {
  const client = new LegacyClient({ name: "e2e-legacy", version: "1.0.0" });
  const transport = new LegacyTransport(new URL(url), { requestInit: withBearer(token) });
  await client.connect(transport);
  try {
    if (transport.protocolVersion !== LEGACY) fail(`negotiated ${transport.protocolVersion}, expected ${LEGACY}`);
    if (!transport.sessionId) fail("no Mcp-Session-Id for a 2025-11-25 client");
    const tools = await listsWhoami(client);
    await callWhoami(client, { tenant, subject, protocolVersion: LEGACY, era: "legacy" });
    return {
      detail: `${LEGACY}, session ${transport.sessionId.slice(0, 8)}…, ${tools} tool(s), whoami = ${tenant}/${subject}`,
      sessionId: transport.sessionId,
      capabilities: client.getServerCapabilities() ?? null,
      // DELETE the session (the 2025 spec's way to end it), then close the client.
      end: async () => {
        await transport.terminateSession();
        await client.close();
      },
      close: () => client.close(),
    };
  } catch (error) {
    await client.close();
    throw error;
  }
}

/** Status of a 2025-11-25 tools/list POST sent with the given token and Mcp-Session-Id (no SDK in between). */
export async function postWithSession({ url, token, sessionId }) {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": LEGACY,
      ...(sessionId ? { "mcp-session-id": sessionId } : {}),
    },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list", params: {} }),
    signal: AbortSignal.timeout(15_000),
  });
  await response.body?.cancel();
  return { status: response.status, wwwAuthenticate: response.headers.get("www-authenticate") };
}

export async function expectStatus(probe, expected) {
  const { status } = await probe;
  if (status !== expected) fail(`HTTP ${status}, expected ${expected}`);
  return `HTTP ${status}`;
}
