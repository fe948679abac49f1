import { AuthorizationError, CimdFetchError, type OAuthHelpers } from "@cloudflare/workers-oauth-provider";
import type { Context, Hono } from "hono";
import { isTenantId, SUBJECT_PATTERN } from "../auth/identity";
import type { Config } from "../config";
import { isKbError, KbError } from "../errors";
import { type AppEnv, requireConfig } from "../http/context";
import { checkOriginAndHost } from "../http/origin-guard";
import { readBodyCapped } from "../http/transport-guards";
import { log } from "../log";
import {
  AS_METADATA_PATH,
  AS_TOKEN_PATH,
  AUTHORIZE_PATH,
  authorizationServer,
  REGISTER_PATH,
} from "./authorization-server";
import { installDevMetadataOrigins } from "./dev-metadata-origins";
import { type GrantProps, grantUserId } from "./grant-user";
import { consentPage, pageResponse, refusalPage, signInPage } from "./pages";
import { openRecord, sealRecord } from "./sealed-record";
import { tenantAcceptsGrants } from "./tenant-state";
import { finishUpstream, startUpstream, UPSTREAM_CALLBACK_PATH, UPSTREAM_START_PATH } from "./upstream-route";

const MAX_FORM_BYTES = 8192;
/** How long a sign-in waits for its consent decision (the library's consent handle lives ten minutes too). */
const SIGNIN_TTL_S = 600;

/**
 * The built-in authorization server's routes. The library serves metadata, token (with refresh and revocation) and
 * registration; /authorize is ours: sign in (dev sign-in outside production), then consent, then the library's
 * completeAuthorization with the tenant and subject fixed by the sign-in. The client never names a tenant.
 *
 *   GET  /.well-known/oauth-authorization-server   RFC 8414 metadata
 *   POST /token                                     authorization_code (PKCE S256), refresh_token; RFC 7009 revocation
 *   POST /register                                  RFC 7591 dynamic registration (rate limited)
 *   GET  /authorize                                 validate the request, show the sign-in
 *   POST /authorize step=signin                     check tenant and subject, show the consent page
 *   POST /authorize step=consent                    Allow or Deny (handle bound to this browser by a cookie)
 */
export function registerOAuthRoutes(app: Hono<AppEnv>): void {
  const library = async (c: Context<AppEnv>) => {
    const config = oauthConfig(c);
    // Hono's ExecutionContext is the platform's; only the type declarations differ.
    const ctx = c.executionCtx as unknown as ExecutionContext;
    return authorizationServer(config).fetch(c.req.raw, c.env, ctx);
  };
  app.on(["GET", "HEAD", "OPTIONS"], AS_METADATA_PATH, library);
  app.on(["POST", "OPTIONS"], AS_TOKEN_PATH, library);
  app.options(REGISTER_PATH, library);
  app.post(REGISTER_PATH, async (c) => {
    const config = oauthConfig(c);
    const limiter = c.env.OAUTH_REGISTRATION_LIMITER;
    // Without its limiter, registration is an unbounded write to KV: refused in production, allowed in dev/tests.
    if (!limiter && config.production) throw new KbError("ERR_CONFIG", "the registration rate limiter is not bound");
    // Per client address (Cloudflare sets CF-Connecting-IP; absent locally): one flooding address exhausts its own
    // budget, not everyone's.
    const address = c.req.header("cf-connecting-ip") ?? "local";
    if (limiter && !(await limiter.limit({ key: `oauth-register:${address}` })).success) {
      log("warn", { event: "oauth.register.refused", requestId: c.var.requestId, code: "ERR_RATE_LIMITED" });
      return c.json(
        { error: "temporarily_unavailable", error_description: "Too many registrations; retry later." },
        429,
        { "retry-after": "60", "cache-control": "no-store" },
      );
    }
    return library(c);
  });

  app.get(AUTHORIZE_PATH, (c) => authorizePage(c, () => showSignIn(c)));
  app.get(UPSTREAM_START_PATH, (c) => authorizePage(c, () => startUpstream(c, helpers(c), oauthConfig(c))));
  app.get(UPSTREAM_CALLBACK_PATH, (c) =>
    authorizePage(c, async () => {
      const config = oauthConfig(c);
      const oauth = helpers(c);
      const outcome = await finishUpstream(c, oauth, config);
      if (outcome.kind === "no-tenant") {
        return pageResponse(
          refusalPage(
            "No tenant for this account",
            "You signed in, but your account is not assigned to any tenant of this service. Ask the operator to " +
              "map your organization (its verified email domain) to a tenant. No access was granted.",
          ),
          403,
        );
      }
      if (!(await tenantAcceptsGrants(c.env, outcome.who.tenant))) return offboarded();
      return consent(c, oauth, outcome.request, outcome.who, config);
    }),
  );
  app.post(AUTHORIZE_PATH, (c) =>
    authorizePage(c, async () => {
      const form = await readForm(c.req.raw);
      return form.get("step") === "consent" ? decide(c, form) : signIn(c, form);
    }),
  );
}

function oauthConfig(c: Context<AppEnv>): Config {
  const config = requireConfig(c.var.config);
  if (!config.oauth) throw new KbError("ERR_NOT_FOUND", "No such route.");
  installDevMetadataOrigins(config.oauth.devMetadataOrigins);
  return config;
}

function helpers(c: Context<AppEnv>): OAuthHelpers {
  return authorizationServer(oauthConfig(c)).getOAuthApi(c.env);
}

/** GET /authorize: the library validates client, exact redirect URI, PKCE and resource first. */
async function showSignIn(c: Context<AppEnv>): Promise<Response> {
  const config = oauthConfig(c);
  const oauth = helpers(c);
  const request = await oauth.parseAuthRequest(c.req.raw);
  if (!config.oauth?.devSignIn && !config.oauth?.upstream) return noSignIn();
  const details = await oauth.describeConsent(request);
  return pageResponse(signInPage(signInView(c, config, details.clientName)));
}

/** POST /authorize step=signin: the dev sign-in. The request is re-validated from the same query string. */
async function signIn(c: Context<AppEnv>, form: URLSearchParams): Promise<Response> {
  const config = oauthConfig(c);
  const oauth = helpers(c);
  const request = await oauth.parseAuthRequest(new Request(c.req.url, { method: "GET" }));
  if (!config.oauth?.devSignIn) return noSignIn();
  checkFormOrigin(c.req.raw, config);
  const tenant = (form.get("tenant") ?? "").trim();
  const subject = (form.get("subject") ?? "").trim();
  const details = await oauth.describeConsent(request);
  const again = (message: string) =>
    pageResponse(signInPage({ ...signInView(c, config, details.clientName), error: message }), 400);
  if (!isTenantId(tenant)) return again("Tenant: lower-case letters, digits and '-', 2 to 63 characters.");
  if (!SUBJECT_PATTERN.test(subject)) return again("Subject: 1 to 255 printable characters without spaces.");
  if (!(await tenantAcceptsGrants(c.env, tenant))) return offboarded();
  return consent(c, oauth, request, { tenant, subject }, config);
}

async function consent(
  c: Context<AppEnv>,
  oauth: OAuthHelpers,
  request: Awaited<ReturnType<OAuthHelpers["parseAuthRequest"]>>,
  who: GrantProps,
  config: Config,
): Promise<Response> {
  const details = await oauth.describeConsent(request); // first: a failed lookup leaves nothing in KV
  const transaction = await oauth.beginConsent(request);
  // The signed-in identity waits server-side for the decision, keyed by the handle (which only the browser that
  // holds the binding cookie can use), so the consent form carries no tenant a page could alter.
  const sealed = await sealRecord(transaction.handle, SIGNIN_PURPOSE, who);
  await c.env.OAUTH_KV.put(await signInKey(transaction.handle), sealed, { expirationTtl: SIGNIN_TTL_S });
  const html = consentPage({
    details,
    handle: transaction.handle,
    tenant: who.tenant,
    subject: who.subject,
    scopesSupported: config.scopesSupported,
  });
  return pageResponse(html, 200, transaction.headers);
}

/** POST /authorize step=consent: Allow or Deny. */
async function decide(c: Context<AppEnv>, form: URLSearchParams): Promise<Response> {
  const config = oauthConfig(c);
  checkFormOrigin(c.req.raw, config);
  const oauth = helpers(c);
  const handle = form.get("handle") ?? "";
  const key = await signInKey(handle);
  if (form.get("decision") !== "approve") {
    const denied = await oauth.denyConsent(c.req.raw, handle);
    await c.env.OAUTH_KV.delete(key); // nothing of a refused sign-in stays behind
    return new Response(null, { status: 302, headers: denied.headers });
  }
  const who = await openRecord<GrantProps>(handle, SIGNIN_PURPOSE, await c.env.OAUTH_KV.get(key));
  if (!who || !isTenantId(who.tenant) || !SUBJECT_PATTERN.test(who.subject)) {
    throw new AuthorizationError("invalid_request", { description: "This sign-in expired; start again." });
  }
  const approved = await oauth.approveConsent(c.req.raw, handle, {
    scope: form.getAll("scope").filter((scope) => config.scopesSupported.includes(scope)),
  });
  await c.env.OAUTH_KV.delete(key);
  // Offboarding between sign-in and consent: no grant.
  if (!(await tenantAcceptsGrants(c.env, who.tenant))) return offboarded();
  const props: GrantProps = { tenant: who.tenant, subject: who.subject };
  const { redirectTo } = await oauth.completeAuthorization({
    request: approved.request,
    userId: await grantUserId(who.tenant, who.subject),
    metadata: { tenant: who.tenant },
    scope: approved.request.scope,
    props,
  });
  log("info", {
    event: "oauth.authorized",
    requestId: c.var.requestId,
    tenant: who.tenant,
    subject: who.subject,
    outcome: "ok",
  });
  approved.headers.set("location", redirectTo);
  return new Response(null, { status: 302, headers: approved.headers });
}

/** Errors of the authorization pages: redirect to the client only when the library validated where to. */
async function authorizePage(c: Context<AppEnv>, run: () => Promise<Response>): Promise<Response> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof AuthorizationError && error.redirectTo) {
      // Never an automatic redirect before the user has done anything: anyone can register a client (or host a
      // metadata document) with a redirect of their choosing, and an error redirect would make this origin an open
      // redirector (RFC 9700 section 4.11.2). The error goes back to the client only through a link the user follows.
      log("warn", { event: "oauth.authorize.refused", requestId: c.var.requestId, code: error.code });
      const returnTo = { href: error.redirectTo, host: new URL(error.redirectTo).host };
      return pageResponse(refusalPage("Authorization refused", error.description, returnTo), 400);
    }
    const code = error instanceof AuthorizationError ? error.code : isKbError(error) ? error.code : null;
    if (code !== null || error instanceof CimdFetchError) {
      log("warn", { event: "oauth.authorize.refused", requestId: c.var.requestId, code: code ?? "cimd_fetch" });
      if (isKbError(error) && error.status >= 500) throw error;
      const message =
        error instanceof AuthorizationError
          ? error.description
          : error instanceof CimdFetchError
            ? "This app could not be verified: its client metadata document could not be fetched or is invalid."
            : isKbError(error)
              ? error.message
              : "Refused.";
      const status = isKbError(error) ? error.status : 400;
      return pageResponse(refusalPage("Authorization refused", message), status);
    }
    throw error;
  }
}

function signInView(c: Context<AppEnv>, config: Config, clientName: string) {
  const url = new URL(c.req.url);
  return {
    clientName,
    devAction: config.oauth?.devSignIn ? `${url.pathname}${url.search}` : null,
    upstreamHref: config.oauth?.upstream ? `${UPSTREAM_START_PATH}${url.search}` : null,
  };
}

function noSignIn(): Response {
  return pageResponse(
    refusalPage(
      "Sign-in unavailable",
      "The development sign-in is disabled here (ENVIRONMENT is production) and no identity provider is configured.",
    ),
    403,
  );
}

function offboarded(): Response {
  return pageResponse(
    refusalPage("Tenant unavailable", "This tenant has been offboarded; no new access is granted."),
    403,
  );
}

/** A form post must come from this server's own pages: Host ours, and Origin absent or our own origin. */
function checkFormOrigin(request: Request, config: Config): void {
  checkOriginAndHost(request, { ...config, allowedOrigins: [config.resourceOrigin] });
}

async function readForm(request: Request): Promise<URLSearchParams> {
  const type = (request.headers.get("content-type") ?? "").split(";")[0]?.trim().toLowerCase();
  if (type !== "application/x-www-form-urlencoded") throw new KbError("ERR_BAD_REQUEST", "expected a form");
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > MAX_FORM_BYTES) throw new KbError("ERR_BAD_REQUEST", "form too large");
  const bytes = await readBodyCapped(request, MAX_FORM_BYTES).catch(() => {
    throw new KbError("ERR_BAD_REQUEST", "form too large");
  });
  return new URLSearchParams(new TextDecoder().decode(bytes));
}

const SIGNIN_PURPOSE = "tenant-mcp-kb oauth sign-in v1";

async function signInKey(handle: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`signin:${handle}`));
  return `signin:${[...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("")}`;
}
