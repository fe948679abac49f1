// HTTP side of the forensics e2e check: a real MCP client (v2, pinned to 2026-07-28) for the writes, raw requests
// for the refusals (their status and body are what is checked), and the admin API.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const MODERN = "2026-07-28";
const TIMEOUT_MS = 30_000;

/** Runs `fn(client)` with a connected v2 MCP client; `call` fails on a tool error. */
export async function withMcpClient(url, token, fn) {
  const client = new Client(
    { name: "e2e-forensics", version: "1.0.0" },
    { versionNegotiation: { mode: { pin: MODERN } } },
  );
  await client.connect(
    new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${token}` } } }),
  );
  const call = async (name, args) => {
    const result = await client.callTool({ name, arguments: args });
    if (result.isError) throw new Error(`${name}: ${JSON.stringify(result.content).slice(0, 300)}`);
    return result.structuredContent ?? {};
  };
  try {
    return await fn({ call, client });
  } finally {
    await client.close();
  }
}

/** One raw 2026-07-28 JSON-RPC request: {status, text}. */
export async function rawRpc(url, token, method, params) {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": MODERN,
      "mcp-method": method,
      ...(method === "tools/call" ? { "mcp-name": params.name } : {}),
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method,
      params: {
        ...params,
        _meta: {
          "io.modelcontextprotocol/protocolVersion": MODERN,
          "io.modelcontextprotocol/clientInfo": { name: "e2e-forensics", version: "1" },
          "io.modelcontextprotocol/clientCapabilities": {},
        },
      },
    }),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  return { status: response.status, text: await response.text() };
}

/** Any HTTP request with a bearer token: {status, text}. */
export async function rawHttp(url, token, { method = "GET", body, contentType, accept } = {}) {
  const headers = { authorization: `Bearer ${token}`, ...(accept ? { accept } : {}) };
  if (body !== undefined) {
    headers["content-type"] = contentType ?? "application/json";
    headers["content-length"] = String(Buffer.byteLength(body));
  }
  const response = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(TIMEOUT_MS) });
  return { status: response.status, text: await response.text() };
}

/** Polls `read` (bounded) until `done(value)`; returns the last value. */
export async function pollUntil(read, done, { timeoutMs = 60_000, everyMs = 500 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let value = await read();
  while (!done(value) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, everyMs));
    value = await read();
  }
  return value;
}
