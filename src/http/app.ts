import { type Context, Hono } from "hono";
import { routePath } from "hono/route";
import { registerAdminRoutes } from "../admin/admin-api";
import type { Identity } from "../auth/identity";
import { hasScopes } from "../auth/identity";
import { protectedResourceMetadata } from "../auth/resource-metadata";
import { bearerFromRequest } from "../auth/verify-token";
import { type Config, DOCUMENT_METHODS, loadConfig, MCP_METHODS, MCP_PATH } from "../config";
import { InsufficientScopeError, KbError, MethodNotAllowedError, toKbError } from "../errors";
import { registerTokenRoutes } from "../exchange/token-route";
import { log } from "../log";
import { registerOAuthRoutes } from "../oauth/authorize-route";
import { verifyBearer } from "../oauth/verify-bearer";
import { tenantStub } from "../tenant/route";
import { type AppEnv, requireConfig } from "./context";
import { errorResponse, PROTECTED_RESOURCE_METADATA_PATH } from "./error-response";
import { checkOriginAndHost } from "./origin-guard";
import { checkJsonContentType, checkProtocolVersion, readBodyCapped, sanitizedMcpRequest } from "./transport-guards";

/**
 * The edge. Order matters and is the security argument: configuration (fail closed) -> Origin/Host ->
 * protocol version -> declared body size -> token verification -> scopes -> capped body read -> the caller's own
 * tenant object. The tenant is taken from the verified token only.
 */
export function createApp(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.use("*", async (c, next) => {
    const started = Date.now();
    c.set("requestId", crypto.randomUUID());
    c.set("config", null);
    c.set("identity", null);
    c.set("tokenSent", false);
    c.set("config", loadConfig(c.env));
    await next();
    c.res.headers.set("x-request-id", c.var.requestId);
    applyCors(c.req.raw, c.res.headers, c.var.config);
    const identity = c.var.identity;
    const status = c.res.status;
    log(status >= 500 ? "error" : "info", {
      event: "http.request",
      requestId: c.var.requestId,
      tenant: identity?.tenant,
      subject: identity?.subject,
      method: c.req.method,
      // The matched route pattern ("/v1/documents/:id", "/admin/tenants/:tenant"), never the raw path or query:
      // a URL can carry a credential or a tenant's document id, and this line is kept by the platform's log store.
      route: loggedRoute(c),
      status,
      outcome: status < 400 ? "ok" : status >= 500 ? "error" : "rejected",
      ms: Date.now() - started,
    });
  });

  app.onError((error, c) => {
    const kbError = toKbError(error);
    if (kbError.status === 401 || kbError.status === 403 || kbError.status >= 500) {
      // The reason a token was refused goes to the log, never to the client.
      log(kbError.status >= 500 ? "error" : "warn", {
        event: "request.refused",
        requestId: c.var.requestId,
        code: kbError.code,
        status: kbError.status,
      });
    }
    return errorResponse(kbError, {
      requestId: c.var.requestId,
      config: c.var.config ?? null,
      tokenSent: c.var.tokenSent ?? false,
      heldScopes: c.var.identity?.scopes ?? [],
    });
  });

  const metadata = (c: Context<AppEnv>) =>
    c.json(protectedResourceMetadata(requireConfig(c.var.config)), 200, {
      "cache-control": "public, max-age=300",
      "access-control-allow-origin": "*",
    });
  app.get(PROTECTED_RESOURCE_METADATA_PATH, (c) => metadata(c));
  app.get(`${PROTECTED_RESOURCE_METADATA_PATH}${MCP_PATH}`, (c) => metadata(c));
  app.get("/healthz", (c) => c.json({ ok: true }, 200, { "cache-control": "no-store" }));

  // CORS preflight for browser MCP clients on an allowed origin (the actual request is checked again in full).
  app.options(MCP_PATH, (c) => {
    const config = requireConfig(c.var.config);
    checkOriginAndHost(c.req.raw, config);
    return new Response(null, {
      status: 204,
      headers: {
        "access-control-allow-methods": "GET, POST, DELETE",
        "access-control-allow-headers": CORS_REQUEST_HEADERS,
        "access-control-max-age": "600",
      },
    });
  });

  app.all(MCP_PATH, async (c) => {
    const config = requireConfig(c.var.config);
    const request = c.req.raw;
    checkOriginAndHost(request, config);
    // GET is passed on so that a GET naming a session is answered for that session (404 unknown, 405 known);
    // no standalone server stream is offered, so Allow never lists GET.
    if (!["GET", "POST", "DELETE"].includes(request.method)) throw new MethodNotAllowedError(MCP_METHODS);
    checkProtocolVersion(request);
    const declared = request.headers.get("content-length");
    if (declared !== null && Number(declared) > config.maxBodyBytes) {
      throw new KbError("ERR_BODY_TOO_LARGE", `Payload too large (limit ${config.maxBodyBytes} bytes)`);
    }

    const identity = await authenticate(c, config);

    let body: ArrayBuffer | null = null;
    if (request.method === "POST") {
      checkJsonContentType(request);
      body = await readBodyCapped(request, config.maxBodyBytes);
    }
    // The tenant object gets the identity (never the token) as an RPC argument a client cannot forge.
    const response = await tenantStub(c.env, identity).serveMcp(
      sanitizedMcpRequest(request, body),
      identity,
      c.var.requestId,
    );
    const out = new Response(response.body, response);
    // Tenant data: never stored by a shared cache, whatever the protocol era.
    out.headers.set("cache-control", "no-store");
    return out;
  });

  // Large documents, streaming: the edge authenticates and forwards the body stream to the tenant object, which
  // encrypts it into R2 as it arrives. Only the headers the endpoint needs are forwarded.
  app.all("/v1/documents/:id", async (c) => {
    const config = requireConfig(c.var.config);
    const request = c.req.raw;
    checkOriginAndHost(request, config);
    if (!DOCUMENT_METHODS.includes(request.method)) throw new MethodNotAllowedError(DOCUMENT_METHODS);
    const identity = await authenticate(c, config);
    const headers = new Headers();
    for (const name of ["content-type", "content-length", "range"]) {
      const value = request.headers.get(name);
      if (value !== null) headers.set(name, value);
    }
    const url = new URL(request.url);
    const forward = new Request(`${url.origin}${url.pathname}`, {
      method: request.method,
      headers,
      body: request.method === "PUT" ? request.body : null,
    });
    const response = await tenantStub(c.env, identity).serveDocument(
      forward,
      identity,
      c.var.requestId,
      c.req.param("id"),
    );
    return new Response(response.body, response);
  });

  registerTokenRoutes(app);
  registerOAuthRoutes(app);
  registerAdminRoutes(app);

  app.notFound((c) =>
    c.json({ error: "not_found", error_description: "No such route." }, 404, { "cache-control": "no-store" }),
  );
  return app;
}

/**
 * The route pattern that answered the request (after `next()` Hono's route index is the handler that ran), or
 * "(no route)" when none matched (the not-found handler): the catch-all middleware "*" is not a route.
 */
function loggedRoute(c: Context<AppEnv>): string {
  const pattern = routePath(c);
  return pattern === "" || pattern === "*" || pattern === "/*" ? "(no route)" : pattern;
}

const CORS_REQUEST_HEADERS =
  "authorization, content-type, accept, last-event-id, mcp-session-id, mcp-protocol-version, mcp-method, mcp-name";
const CORS_EXPOSED_HEADERS = "mcp-session-id, www-authenticate, x-request-id";

/** Lets a browser on an allowed origin read responses (including 401 challenges); other origins get nothing. */
function applyCors(request: Request, headers: Headers, config: Config | null): void {
  const origin = request.headers.get("origin");
  if (!config || origin === null || !config.allowedOrigins.includes(origin.trim().toLowerCase())) return;
  headers.set("access-control-allow-origin", origin);
  headers.set("access-control-expose-headers", CORS_EXPOSED_HEADERS);
  headers.append("vary", "Origin");
}

/** Verifies the bearer token for a tenant-facing route and checks the endpoint scopes. */
async function authenticate(c: Context<AppEnv>, config: Config): Promise<Identity> {
  const request = c.req.raw;
  c.set("tokenSent", request.headers.has("authorization") || new URL(request.url).searchParams.has("access_token"));
  const identity = await verifyBearer(bearerFromRequest(request), config, c.env);
  c.set("identity", identity);
  if (hasScopes(identity, config.requiredScopes).length) throw new InsufficientScopeError(config.requiredScopes);
  return identity;
}
