import type { Hono } from "hono";
import type { Identity } from "../auth/identity";
import { hasScopes } from "../auth/identity";
import { isKbError } from "../errors";
import { type AppEnv, requireConfig } from "../http/context";
import { checkOriginAndHost } from "../http/origin-guard";
import { readBodyCapped } from "../http/transport-guards";
import { log } from "../log";
import { verifyBearer } from "../oauth/verify-bearer";
import { tenantStub } from "../tenant/route";
import { JWKS_MAX_AGE_S, jwksCacheKey, jwksMemo } from "./jwks-cache";
import { OAuthError, oauthErrorResponse, parseExchangeForm } from "./token-exchange";

const MAX_FORM_BYTES = 16 * 1024;

/**
 * POST /oauth/token (RFC 8693 token exchange) and GET /.well-known/jwks.json (the keys that sign exchanged tokens).
 * The subject token is verified exactly like the edge verifies an access token (issuer, audience = this server,
 * algorithms, lifetime, tenant claim, and the endpoint scopes REQUIRED_SCOPES that /mcp requires); the policy
 * decision is the tenant object's. Nothing is issued on any error.
 */
export function registerTokenRoutes(app: Hono<AppEnv>): void {
  app.post("/oauth/token", async (c) => {
    const config = requireConfig(c.var.config);
    const requestId = c.var.requestId;
    checkOriginAndHost(c.req.raw, config);
    try {
      const type = (c.req.header("content-type") ?? "").split(";")[0]?.trim().toLowerCase();
      if (type !== "application/x-www-form-urlencoded") {
        throw new OAuthError("invalid_request", "use application/x-www-form-urlencoded");
      }
      let bytes: ArrayBuffer;
      try {
        bytes = await readBodyCapped(c.req.raw, MAX_FORM_BYTES);
      } catch {
        throw new OAuthError("invalid_request", "request too large");
      }
      const request = parseExchangeForm(new URLSearchParams(new TextDecoder().decode(bytes)));
      let identity: Identity;
      try {
        identity = await verifyBearer(request.subjectToken, config, c.env);
      } catch (error) {
        log("warn", {
          event: "token.exchange.refused",
          requestId,
          code: isKbError(error) ? error.code : "ERR_INTERNAL",
        });
        throw new OAuthError("invalid_grant", "the subject token is invalid");
      }
      c.set("identity", identity);
      // The subject token must be one /mcp would accept: the endpoint scopes (REQUIRED_SCOPES) are required too.
      const missing = hasScopes(identity, config.requiredScopes);
      if (missing.length) {
        log("warn", { event: "token.exchange.refused", requestId, code: "ERR_INSUFFICIENT_SCOPE" });
        throw new OAuthError("invalid_grant", `the subject token lacks the required scope: ${missing.join(" ")}`);
      }
      const outcome = await tenantStub(c.env, identity).exchange(identity, requestId, {
        resource: request.resource,
        audience: request.audience,
        scope: request.scope,
      });
      if (outcome.error !== null || outcome.response === null) {
        throw new OAuthError(outcome.error ?? "invalid_grant", outcome.description);
      }
      return new Response(JSON.stringify(outcome.response), {
        status: 200,
        headers: { "content-type": "application/json", "cache-control": "no-store", pragma: "no-cache" },
      });
    } catch (error) {
      if (error instanceof OAuthError) return oauthErrorResponse(error, requestId);
      throw error;
    }
  });

  // Public, tenant-neutral, cached at the edge (jwks-cache.ts): a flood never reaches the registry object.
  app.get("/.well-known/jwks.json", async (c) => {
    const key = jwksCacheKey(c.req.url);
    const cache = await edgeCache();
    const hit = await cache?.match(key).catch(() => undefined);
    if (hit) return new Response(hit.body, hit);
    const body = await jwksMemo.get(async () => {
      const registry = c.env.TENANT_REGISTRY.get(c.env.TENANT_REGISTRY.idFromName("registry"));
      return registry.jwks();
    });
    const response = new Response(JSON.stringify(body), {
      status: 200,
      headers: {
        "content-type": "application/json",
        "cache-control": `public, max-age=${JWKS_MAX_AGE_S}`,
        "access-control-allow-origin": "*",
      },
    });
    if (cache) {
      const stored = cache.put(key, response.clone()).catch(() => undefined);
      try {
        c.executionCtx.waitUntil(stored);
      } catch {
        await stored;
      }
    }
    return response;
  });
}

/** The Workers Cache API's default cache, or null where there is none (the JWKS is then served from the memo). */
async function edgeCache(): Promise<Cache | null> {
  try {
    return typeof caches === "undefined" ? null : caches.default;
  } catch {
    return null;
  }
}

/** Forgets the cached JWKS in this isolate and location (after a signing-key rotation). */
export async function forgetCachedJwks(requestUrl: string): Promise<void> {
  jwksMemo.clear();
  await (await edgeCache())?.delete(jwksCacheKey(requestUrl)).catch(() => false);
}
