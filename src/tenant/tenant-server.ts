import { DurableObject } from "cloudflare:workers";
import { createMcpHandler, isLegacyRequest, legacyStatelessFallback } from "@modelcontextprotocol/server";
import { type Identity, SUBJECT_PATTERN, TENANT_PATTERN } from "../auth/identity";
import { type Config, loadConfig } from "../config";
import type { Env } from "../env";
import { InsufficientScopeError, KbError } from "../errors";
import { errorResponse, toKbError } from "../http/error-response";
import { MODERN_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from "../http/transport-guards";
import { EmbeddingCache } from "../kb/embedding-cache";
import { KnowledgeBase } from "../kb/knowledge-base";
import { LIMITS } from "../kb/limits";
import { LocalVectorIndex } from "../kb/local-index";
import { embedderFor, placementFor } from "../kb/placement";
import { VectorizeVectorStore } from "../kb/vectorize-index";
import { log } from "../log";
import { HandleCodec } from "../mcp/handles";
import type { RequestScope } from "../mcp/request-scope";
import { createTenantMcpServer } from "../mcp/server-factory";
import { SessionStore } from "../mcp/sessions";
import { requiredScopes } from "../mcp/tool-scopes";
import { migrate } from "./schema";

const LEGACY_VERSIONS: readonly string[] = SUPPORTED_PROTOCOL_VERSIONS.filter(
  (version) => version !== MODERN_PROTOCOL_VERSION,
);
const DEFAULT_LEGACY_VERSION = "2025-11-25";

/**
 * One instance per tenant (`idFromName(tenant)`): it hosts that tenant's MCP server and owns all of its storage.
 * Its RPC surface is `serveMcp`; everything else is #private. The identity arrives as an RPC argument from the
 * edge, which verified the token; the object re-checks that the identity's tenant is the one it was created for.
 */
export class TenantServer extends DurableObject<Env> {
  /** This tenant's knowledge base; its local vector index stays loaded for the object's lifetime. */
  #kb: KnowledgeBase | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => migrate(ctx.storage.sql));
  }

  async serveMcp(request: Request, identity: Identity, requestId: string): Promise<Response> {
    let config: Config | null = null;
    try {
      config = loadConfig(this.env);
      this.#assertOwnTenant(identity, requestId, config);
      return await this.#route(request, identity, requestId, config);
    } catch (error) {
      const kbError = toKbError(error);
      if (kbError.status >= 500) {
        log("error", { event: "mcp.error", requestId, tenant: identity.tenant, code: kbError.code });
      }
      return errorResponse(kbError, { requestId, config, tokenSent: true });
    }
  }

  async #route(request: Request, identity: Identity, requestId: string, config: Config): Promise<Response> {
    const body = request.method === "POST" ? await request.text() : "";
    let parsedBody: unknown;
    try {
      parsedBody = body ? JSON.parse(body) : undefined;
    } catch {
      parsedBody = undefined;
    }
    const missing = requiredScopes(parsedBody).filter((scope) => !identity.scopes.includes(scope));
    if (missing.length) throw new InsufficientScopeError(missing);
    const forward = new Request(request.url, {
      method: request.method,
      headers: request.headers,
      body: request.method === "POST" ? body : null,
    });
    const legacy = await isLegacyRequest(forward.clone(), parsedBody, { maxRequestBodySize: config.maxBodyBytes });
    if (!legacy) {
      const scope = await this.#scope(identity, requestId, "modern", MODERN_PROTOCOL_VERSION);
      const kb = this.#knowledgeBase(identity.tenant);
      const handler = createMcpHandler(() => createTenantMcpServer(scope, scope.requestStateKey, kb), {
        legacy: "reject",
        maxRequestBodySize: config.maxBodyBytes,
      });
      return handler.fetch(forward, parsedBody === undefined ? undefined : { parsedBody });
    }
    return this.#serveLegacy(forward, parsedBody, identity, requestId, config);
  }

  /**
   * 2025-era clients are sessionful. Sessions live in SQLite (so they survive eviction) and each request is then
   * served by a fresh server instance; the session id is checked against the caller's tenant and subject first.
   */
  async #serveLegacy(
    request: Request,
    parsedBody: unknown,
    identity: Identity,
    requestId: string,
    config: Config,
  ): Promise<Response> {
    const sessions = new SessionStore(this.ctx.storage.sql, identity.tenant, {
      idleTtlMs: config.sessionIdleTtlS * 1000,
      maxPerSubject: config.maxSessionsPerSubject,
    });
    const now = Date.now();
    const sessionId = request.headers.get("mcp-session-id");
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
      const response = await this.#legacyHandler(identity, requestId, offered, config)(request, { parsedBody });
      // A session exists only for a handshake that succeeded: the answer must be a result for this request id.
      const text = await response.text();
      const result = initializeResult(text, id);
      const copy = new Response(text, response);
      if (response.status >= 400 || !result) return copy;
      const version = LEGACY_VERSIONS.includes(result.protocolVersion) ? result.protocolVersion : offered;
      const newId = await sessions.create(identity.subject, version, now);
      log("info", {
        event: "mcp.session.created",
        requestId,
        tenant: identity.tenant,
        subject: identity.subject,
        outcome: "ok",
      });
      copy.headers.set("mcp-session-id", newId);
      return copy;
    }

    if (!sessionId) {
      if (request.method === "GET") throw new KbError("ERR_METHOD_NOT_ALLOWED", "Method not allowed.");
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
    if (request.method === "GET") throw new KbError("ERR_METHOD_NOT_ALLOWED", "Method not allowed.");
    if (request.method !== "POST") throw new KbError("ERR_METHOD_NOT_ALLOWED", "Method not allowed.");
    // Unsupported versions were refused at the edge. A different supported legacy version is tolerated (clients
    // SHOULD send the negotiated one), but the session is always served at the version it negotiated.
    const header = request.headers.get("mcp-protocol-version");
    if (header !== null && !LEGACY_VERSIONS.includes(header)) {
      throw new KbError("ERR_PROTOCOL_VERSION", "Bad Request: MCP-Protocol-Version not usable for this session");
    }
    const pinned = new Request(request, { headers: new Headers(request.headers) });
    pinned.headers.set("mcp-protocol-version", session.protocolVersion);
    const response = await this.#legacyHandler(
      identity,
      requestId,
      session.protocolVersion,
      config,
    )(pinned, {
      parsedBody,
    });
    return withHeader(response, "mcp-session-id", sessionId);
  }

  #legacyHandler(identity: Identity, requestId: string, version: string, config: Config) {
    return legacyStatelessFallback(
      async () => {
        const scope = await this.#scope(identity, requestId, "legacy", version);
        return createTenantMcpServer(scope, scope.requestStateKey, this.#knowledgeBase(identity.tenant));
      },
      undefined,
      { maxRequestBodySize: config.maxBodyBytes },
    );
  }

  async #scope(
    identity: Identity,
    requestId: string,
    era: "legacy" | "modern",
    protocolVersion: string,
  ): Promise<RequestScope & { requestStateKey: Uint8Array }> {
    const handles = await HandleCodec.create(this.#secret(identity.tenant, "handle-mac-key"), identity);
    return {
      identity,
      era,
      protocolVersion,
      requestId,
      handles,
      requestStateKey: this.#secret(identity.tenant, "request-state-key"),
    };
  }

  #knowledgeBase(tenant: string): KnowledgeBase {
    if (this.#kb) return this.#kb;
    const sql = this.ctx.storage.sql;
    const embedder = embedderFor(this.env);
    const placement = placementFor(this.env, tenant);
    const store =
      placement.kind === "local"
        ? new LocalVectorIndex(sql, tenant, embedder.dimensions)
        : new VectorizeVectorStore(sql, tenant, placement.vectorize, embedder.dimensions);
    this.#kb = new KnowledgeBase({
      sql,
      transaction: (fn) => this.ctx.storage.transactionSync(fn),
      tenant,
      store,
      embedder,
      cache: new EmbeddingCache(sql, tenant),
      maxAtoms: placement.kind === "local" ? LIMITS.localAtomsPerTenant : 5_000_000,
    });
    return this.#kb;
  }

  /** A per-tenant random secret, created on first use and kept in this tenant's storage only. */
  #secret(tenant: string, name: string): Uint8Array {
    const row = this.ctx.storage.sql
      .exec<{ value: ArrayBuffer }>(`SELECT value FROM tenant_secrets WHERE tenant = ? AND name = ?`, tenant, name)
      .toArray()[0];
    if (row) return new Uint8Array(row.value);
    const value = crypto.getRandomValues(new Uint8Array(32));
    this.ctx.storage.sql.exec(
      `INSERT INTO tenant_secrets (tenant, name, value, created_at) VALUES (?, ?, ?, ?)`,
      tenant,
      name,
      value,
      Date.now(),
    );
    return value;
  }

  /**
   * Defence in depth: the edge chose this object by `idFromName(identity.tenant)`, so a mismatch means a routing
   * bug or a forged call. The object also remembers the first tenant it served and refuses any other.
   */
  #assertOwnTenant(identity: Identity, requestId: string, config: Config): void {
    const valid =
      typeof identity?.tenant === "string" &&
      TENANT_PATTERN.test(identity.tenant) &&
      typeof identity.subject === "string" &&
      SUBJECT_PATTERN.test(identity.subject) &&
      this.env.TENANT_SERVER.idFromName(identity.tenant).equals(this.ctx.id);
    const bound = valid ? this.#bindTenant(identity.tenant) : null;
    if (!valid || bound !== identity.tenant) {
      log("warn", { event: "tenant.mismatch", requestId, tenant: bound ?? undefined, outcome: "rejected" });
      throw new KbError("ERR_TENANT_MISMATCH", "Forbidden");
    }
    if ((identity.expiresAt + config.clockToleranceS) * 1000 <= Date.now()) {
      throw new KbError("ERR_TOKEN_EXPIRED", "token expired");
    }
  }

  #bindTenant(tenant: string): string {
    const sql = this.ctx.storage.sql;
    sql.exec(`INSERT INTO tenant_meta (key, value) VALUES ('tenant', ?) ON CONFLICT (key) DO NOTHING`, tenant);
    return sql.exec<{ value: string }>(`SELECT value FROM tenant_meta WHERE key = 'tenant'`).one().value;
  }
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

function withHeader(response: Response, name: string, value: string): Response {
  const copy = new Response(response.body, response);
  copy.headers.set(name, value);
  return copy;
}
