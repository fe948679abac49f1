import {
  createMcpHandler,
  isLegacyRequest,
  legacyStatelessFallback,
  type McpServer,
} from "@modelcontextprotocol/server";
import type { Identity } from "../auth/identity";
import { type Config, MCP_METHODS } from "../config";
import { InsufficientScopeError, KbError, MethodNotAllowedError } from "../errors";
import { MODERN_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from "../http/transport-guards";
import { log } from "../log";
import type { SessionStore } from "./sessions";
import { requiredScopes } from "./tool-scopes";

const LEGACY_VERSIONS: readonly string[] = SUPPORTED_PROTOCOL_VERSIONS.filter(
  (version) => version !== MODERN_PROTOCOL_VERSION,
);
const DEFAULT_LEGACY_VERSION = "2025-11-25";

export interface McpEndpointDeps {
  readonly identity: Identity;
  readonly requestId: string;
  readonly config: Config;
  readonly sessions: SessionStore;
  /**
   * A server for one request of this caller, at the given era and protocol revision. `fresh`: an instance that
   * has served no other request (a 2025 handshake leaves the client's capabilities in the instance).
   */
  readonly serverFor: (era: "legacy" | "modern", protocolVersion: string, fresh: boolean) => Promise<McpServer>;
}

/**
 * Serves one MCP HTTP request inside the tenant object. 2026-07-28 requests go to the SDK's modern handler
 * (stateless). 2025 requests are sessionful: the session lives in SQLite keyed (tenant, subject, hash(id)), is
 * checked against the caller before anything is dispatched; nothing of the session lives in a server instance (so
 * sessions survive eviction), and a handshake gets an instance of its own. Per-operation scopes are checked before
 * dispatch (403 insufficient_scope).
 */
export async function serveMcpRequest(request: Request, deps: McpEndpointDeps): Promise<Response> {
  const body = request.method === "POST" ? await request.text() : "";
  let parsedBody: unknown;
  try {
    parsedBody = body ? JSON.parse(body) : undefined;
  } catch {
    parsedBody = undefined;
  }
  const missing = requiredScopes(parsedBody).filter((scope) => !deps.identity.scopes.includes(scope));
  if (missing.length) throw new InsufficientScopeError(missing);
  const forward = new Request(request.url, {
    method: request.method,
    headers: request.headers,
    body: request.method === "POST" ? body : null,
  });
  const maxRequestBodySize = deps.config.maxBodyBytes;
  // With the parsed body the SDK classifies without reading the request (without it, it reads a clone itself), and
  // the handler below takes the same parsed body: the body is decoded and parsed once, here.
  if (!(await isLegacyRequest(forward, parsedBody, { maxRequestBodySize }))) {
    const server = await deps.serverFor("modern", MODERN_PROTOCOL_VERSION, false);
    const handler = createMcpHandler(() => server, { legacy: "reject", maxRequestBodySize });
    return handler.fetch(forward, parsedBody === undefined ? undefined : { parsedBody });
  }
  return serveLegacy(forward, parsedBody, deps);
}

async function serveLegacy(request: Request, parsedBody: unknown, deps: McpEndpointDeps): Promise<Response> {
  const { identity, requestId, sessions } = deps;
  const now = Date.now();
  // The server is built before the SDK sees the request: a failure to build it (ERR_KEY_UNAVAILABLE when the
  // tenant's keys cannot be unwrapped) keeps its code and status instead of becoming the SDK's generic 500.
  const handlerFor = async (version: string, fresh: boolean) => {
    const server = await deps.serverFor("legacy", version, fresh);
    return legacyStatelessFallback(() => server, undefined, { maxRequestBodySize: deps.config.maxBodyBytes });
  };
  const isInitialize =
    request.method === "POST" &&
    typeof parsedBody === "object" &&
    parsedBody !== null &&
    !Array.isArray(parsedBody) &&
    (parsedBody as { method?: unknown }).method === "initialize";

  if (isInitialize) {
    const id = (parsedBody as { id?: unknown }).id;
    if (typeof id !== "string" && typeof id !== "number") {
      throw new KbError("ERR_BAD_REQUEST", "Bad Request: initialize must be a request with an id");
    }
    const requested = (parsedBody as { params?: { protocolVersion?: unknown } }).params?.protocolVersion;
    const offered =
      typeof requested === "string" && LEGACY_VERSIONS.includes(requested) ? requested : DEFAULT_LEGACY_VERSION;
    // Version negotiation agrees with the edge (issue 11 item 11): a revision the edge would refuse in
    // MCP-Protocol-Version (e.g. 2024-11-05, the HTTP+SSE era) is never negotiated. The SDK echoes any revision it
    // knows, so the handshake is handed to it as a request for `offered`: the client is answered with a version it
    // can actually use on the next request, or disconnects (MCP lifecycle, version negotiation).
    const negotiated = offered === requested ? parsedBody : withProtocolVersion(parsedBody, offered);
    const handshake =
      negotiated === parsedBody
        ? request
        : new Request(request.url, { method: "POST", headers: request.headers, body: JSON.stringify(negotiated) });
    const response = await (await handlerFor(offered, true))(handshake, { parsedBody: negotiated });
    // A session exists only for a handshake that succeeded: the answer must be a result for this request id.
    const text = await response.text();
    const result = initializeResult(text, id);
    const copy = new Response(text, response);
    if (response.status >= 400 || !result) return copy;
    if (!LEGACY_VERSIONS.includes(result.protocolVersion)) {
      // Fail closed: never open a session at a revision the edge refuses.
      throw new KbError("ERR_PROTOCOL_VERSION", "Bad Request: unsupported protocol version");
    }
    const version = result.protocolVersion;
    const sessionId = await sessions.create(identity.subject, version, now);
    log("info", {
      event: "mcp.session.created",
      requestId,
      tenant: identity.tenant,
      subject: identity.subject,
      outcome: "ok",
    });
    copy.headers.set("mcp-session-id", sessionId);
    return copy;
  }

  const sessionId = request.headers.get("mcp-session-id");
  if (!sessionId) {
    if (request.method === "GET") throw new MethodNotAllowedError(MCP_METHODS);
    throw new KbError("ERR_SESSION_REQUIRED", "Bad Request: Mcp-Session-Id header is required");
  }
  if (request.method === "DELETE") {
    if (!(await sessions.end(identity.subject, sessionId))) {
      throw new KbError("ERR_SESSION_NOT_FOUND", "Session not found");
    }
    log("info", {
      event: "mcp.session.ended",
      requestId,
      tenant: identity.tenant,
      subject: identity.subject,
      outcome: "ok",
    });
    return new Response(null, { status: 204 });
  }
  const session = await sessions.touch(identity.subject, sessionId, now);
  if (!session) throw new KbError("ERR_SESSION_NOT_FOUND", "Session not found");
  // No standalone server-to-client stream is offered (the spec allows 405 for GET).
  if (request.method !== "POST") throw new MethodNotAllowedError(MCP_METHODS);
  // Unsupported versions were refused at the edge. A different supported legacy version is tolerated (clients
  // SHOULD send the negotiated one), but the session is always served at the version it negotiated.
  const header = request.headers.get("mcp-protocol-version");
  if (header !== null && !LEGACY_VERSIONS.includes(header)) {
    throw new KbError("ERR_PROTOCOL_VERSION", "Bad Request: MCP-Protocol-Version not usable for this session");
  }
  const pinned = new Request(request, { headers: new Headers(request.headers) });
  pinned.headers.set("mcp-protocol-version", session.protocolVersion);
  const response = await (await handlerFor(session.protocolVersion, false))(pinned, { parsedBody });
  const out = new Response(response.body, response);
  out.headers.set("mcp-session-id", sessionId);
  return out;
}

/** A copy of an initialize request asking for `version` (params otherwise unchanged). */
function withProtocolVersion(body: unknown, version: string): unknown {
  const request = body as { params?: Record<string, unknown> };
  return { ...request, params: { ...(request.params ?? {}), protocolVersion: version } };
}

/** The InitializeResult for request `id` in a JSON or SSE response body, or null. */
function initializeResult(body: string, id: string | number): { protocolVersion: string } | null {
  const candidates = body.trimStart().startsWith("{")
    ? [body]
    : body
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5));
  for (const candidate of candidates) {
    try {
      const message = JSON.parse(candidate) as { id?: unknown; result?: { protocolVersion?: unknown } };
      if (message.id === id && typeof message.result?.protocolVersion === "string") {
        return { protocolVersion: message.result.protocolVersion };
      }
    } catch {
      // not JSON: not a result
    }
  }
  return null;
}
