import { exports } from "cloudflare:workers";
import { BASE, bearer } from "./tokens";

export const LEGACY_VERSION = "2025-11-25";

export function mcpFetch(init: RequestInit & { token?: string; path?: string } = {}): Promise<Response> {
  const { token, path, headers, ...rest } = init;
  const merged = new Headers(headers);
  if (token) for (const [k, v] of Object.entries(bearer(token))) merged.set(k, v);
  if (rest.body !== undefined && !merged.has("content-type")) merged.set("content-type", "application/json");
  if (!merged.has("accept")) merged.set("accept", "application/json, text/event-stream");
  return exports.default.fetch(new Request(`${BASE}${path ?? "/mcp"}`, { ...rest, headers: merged }));
}

export function initializeBody(id: number | string = 1, protocolVersion = LEGACY_VERSION) {
  return JSON.stringify({
    jsonrpc: "2.0",
    id,
    method: "initialize",
    params: { protocolVersion, capabilities: {}, clientInfo: { name: "raw-test", version: "0" } },
  });
}

/** Reads a JSON-RPC answer from a JSON or SSE response body. */
export async function rpcResult(response: Response): Promise<Record<string, unknown>> {
  const text = await response.text();
  if ((response.headers.get("content-type") ?? "").includes("text/event-stream")) {
    const data = text
      .split("\n")
      .filter((line) => line.startsWith("data:"))
      .map((line) => line.slice(5).trim())
      .filter(Boolean);
    const last = data.at(-1);
    if (!last) throw new Error(`no SSE data in: ${text}`);
    return JSON.parse(last) as Record<string, unknown>;
  }
  return JSON.parse(text) as Record<string, unknown>;
}
