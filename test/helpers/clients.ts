import { exports } from "cloudflare:workers";
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from "@modelcontextprotocol/client";
import { Client as V1Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport as V1Transport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { BASE } from "./tokens";

export const MODERN_VERSION = "2026-07-28";
export const MCP_URL = new URL(`${BASE}/mcp`);

/** One HTTP exchange as the client made it (request headers/body) and as the Worker answered it. */
export interface Exchange {
  readonly method: string;
  readonly url: string;
  readonly requestHeaders: Record<string, string>;
  readonly requestBody: string;
  readonly status: number;
  readonly responseHeaders: Record<string, string>;
  /** Resolves to the full response body (read from a clone, so the client still gets the original). */
  readonly responseBody: Promise<string>;
}

export type InProcessFetch = (url: string | URL, init?: RequestInit) => Promise<Response>;

/**
 * A `fetch` for MCP client transports that routes every request to the Worker in-process (`exports.default.fetch`)
 * and records each exchange. Only the MCP URL's origin is served; anything else fails, so a client can never reach
 * the network by accident.
 */
export function recordingFetch(exchanges: Exchange[] = []): { fetch: InProcessFetch; exchanges: Exchange[] } {
  const fetch: InProcessFetch = async (url, init) => {
    const request = new Request(url, init);
    if (new URL(request.url).origin !== MCP_URL.origin) throw new Error(`unexpected fetch to ${request.url}`);
    const requestBody = request.method === "POST" ? await request.clone().text() : "";
    const response = await exports.default.fetch(request);
    const copy = response.clone();
    exchanges.push({
      method: request.method,
      url: request.url,
      requestHeaders: Object.fromEntries(request.headers),
      requestBody,
      status: response.status,
      responseHeaders: Object.fromEntries(response.headers),
      responseBody: copy.body ? copy.text() : Promise.resolve(""),
    });
    return response;
  };
  return { fetch, exchanges };
}

/** Parses JSON-RPC messages out of a JSON or SSE response body. */
export function rpcMessages(body: string, contentType: string | undefined): Record<string, unknown>[] {
  if (!body) return [];
  if ((contentType ?? "").includes("text/event-stream")) {
    return body
      .split("\n")
      .filter((line) => line.startsWith("data:"))
      .map((line) => line.slice(5).trim())
      .filter(Boolean)
      .map((data) => JSON.parse(data) as Record<string, unknown>);
  }
  const parsed = JSON.parse(body) as unknown;
  return (Array.isArray(parsed) ? parsed : [parsed]) as Record<string, unknown>[];
}

export interface ConnectedClient<C> {
  readonly client: C;
  readonly exchanges: Exchange[];
  close(): Promise<void>;
}

/** A `@modelcontextprotocol/client` v2 client pinned to 2026-07-28, talking to the Worker in-process. */
export async function connectModernClient(token: string): Promise<ConnectedClient<ModernClient>> {
  const { fetch, exchanges } = recordingFetch();
  const transport = new ModernTransport(MCP_URL, {
    fetch,
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  });
  const client = new ModernClient(
    { name: "modern-test-client", version: "0.0.0" },
    { versionNegotiation: { mode: { pin: MODERN_VERSION } } },
  );
  await client.connect(transport);
  return { client, exchanges, close: () => client.close() };
}

/** A `@modelcontextprotocol/sdk` v1 client (2025-11-25, sessionful), talking to the Worker in-process. */
export async function connectV1Client(token: string): Promise<ConnectedClient<V1Client> & { transport: V1Transport }> {
  const { fetch, exchanges } = recordingFetch();
  const transport = new V1Transport(MCP_URL, {
    fetch,
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  });
  const client = new V1Client({ name: "v1-test-client", version: "0.0.0" });
  await client.connect(transport);
  return { client, transport, exchanges, close: () => client.close() };
}

/**
 * A raw 2026-07-28 request as the v2 client builds it: the `mcp-method` (and, for named calls, `mcp-name`) and
 * `mcp-protocol-version` headers, and a `_meta` envelope carrying protocol version, client info and capabilities.
 */
export function modernRequest(
  id: number | string,
  method: string,
  params: Record<string, unknown> = {},
): { headers: Record<string, string>; body: string } {
  const headers: Record<string, string> = { "mcp-method": method, "mcp-protocol-version": MODERN_VERSION };
  if (typeof params.name === "string") headers["mcp-name"] = params.name;
  const _meta = {
    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
    "io.modelcontextprotocol/clientInfo": { name: "raw-modern-test", version: "0" },
    "io.modelcontextprotocol/clientCapabilities": {},
  };
  return { headers, body: JSON.stringify({ jsonrpc: "2.0", id, method, params: { ...params, _meta } }) };
}

/** The three base64url segments of a compact JWS, for "no part of the token leaks" assertions. */
export function tokenParts(token: string): string[] {
  const parts = token.split(".");
  if (parts.length !== 3 || parts.some((part) => part.length < 16)) throw new Error("not a compact JWS");
  return [token, ...parts];
}
