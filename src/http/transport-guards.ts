import { KbError } from "../errors";

/** Protocol revisions this server speaks: 2026-07-28 (stateless) and the 2025 streamable-HTTP revisions. */
export const MODERN_PROTOCOL_VERSION = "2026-07-28";
export const SUPPORTED_PROTOCOL_VERSIONS = [MODERN_PROTOCOL_VERSION, "2025-11-25", "2025-06-18", "2025-03-26"] as const;

export function checkProtocolVersion(request: Request): void {
  const version = request.headers.get("mcp-protocol-version");
  if (version !== null && !(SUPPORTED_PROTOCOL_VERSIONS as readonly string[]).includes(version)) {
    throw new KbError(
      "ERR_PROTOCOL_VERSION",
      `Bad Request: unsupported MCP-Protocol-Version (supported: ${SUPPORTED_PROTOCOL_VERSIONS.join(", ")})`,
    );
  }
}

/** Reads a request body up to `limit` bytes; a larger body is refused (413) without being buffered. */
export async function readBodyCapped(request: Request, limit: number): Promise<ArrayBuffer> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) {
    throw new KbError("ERR_BODY_TOO_LARGE", `Payload too large (limit ${limit} bytes)`);
  }
  if (!request.body) return new ArrayBuffer(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel();
      throw new KbError("ERR_BODY_TOO_LARGE", `Payload too large (limit ${limit} bytes)`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out.buffer;
}

export function checkJsonContentType(request: Request): void {
  const type = (request.headers.get("content-type") ?? "").split(";")[0]?.trim().toLowerCase();
  if (type !== "application/json") {
    throw new KbError("ERR_CONTENT_TYPE", "Unsupported Media Type: Content-Type must be application/json");
  }
}

/**
 * The headers an MCP request needs inside the tenant object. Everything else (Authorization, Cookie, forwarding
 * headers, anything a client invents) is dropped at the edge: the tenant object never sees the bearer token.
 */
const FORWARDED_HEADERS = [
  "accept",
  "content-type",
  "last-event-id",
  "mcp-session-id",
  "mcp-protocol-version",
  "mcp-method",
  "mcp-name",
];

export function sanitizedMcpRequest(request: Request, body: ArrayBuffer | null): Request {
  const headers = new Headers();
  for (const name of FORWARDED_HEADERS) {
    const value = request.headers.get(name);
    if (value !== null) headers.set(name, value);
  }
  for (const [name, value] of request.headers) {
    // 2026-07-28 mirrors tool arguments into `Mcp-Param-*` headers; they are MCP data, not credentials.
    if (name.startsWith("mcp-param-")) headers.set(name, value);
  }
  const url = new URL(request.url);
  return new Request(`${url.origin}${url.pathname}`, {
    method: request.method,
    headers,
    body: body && request.method !== "GET" && request.method !== "HEAD" ? body : null,
  });
}
