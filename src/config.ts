import { z } from "zod";
import type { Env } from "./env";
import { KbError } from "./errors";
import {
  type EmbedderSetting,
  type ExtractorSetting,
  parseEmbedder,
  parseExtractor,
  parseVectorPlacement,
  type VectorPlacementSetting,
} from "./kb/placement-config";
import { DEFAULT_QUOTAS, type QuotaLimits } from "./tenant/quotas";

/** Issuer of the local dev tokens (`npm run token`). `.invalid` is a reserved TLD: it can never be a real issuer. */
export const DEV_ISSUER = "https://dev-issuer.invalid";

/** Only asymmetric JWS algorithms can be allowed: a symmetric key would have to be shared with every verifier. */
export const ASYMMETRIC_ALGORITHMS = [
  "ES256",
  "ES384",
  "ES512",
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "EdDSA",
  "Ed25519",
] as const;

export const MCP_PATH = "/mcp";
/** What the MCP endpoint serves (`Allow` on 405): no standalone server stream, so never GET. */
export const MCP_METHODS: readonly string[] = ["POST", "DELETE"];
/** What `/v1/documents/:id` serves. */
export const DOCUMENT_METHODS: readonly string[] = ["GET", "HEAD", "PUT", "DELETE"];
export const MAX_TOKEN_BYTES = 8192;

export interface Config {
  readonly production: boolean;
  readonly resource: string;
  readonly resourceOrigin: string;
  /** Audience of platform-admin tokens (the admin API); never equal to the MCP resource. */
  readonly adminAudience: string;
  readonly issuer: string;
  readonly authorizationServers: readonly string[];
  readonly jwks:
    | { readonly kind: "inline"; readonly keys: JsonWebKeySet }
    | { readonly kind: "remote"; readonly url: string };
  readonly algorithms: readonly string[];
  readonly tokenTyp: string | null;
  readonly clockToleranceS: number;
  /**
   * Maximum token age in seconds, measured from `iat` (AUTH_MAX_TOKEN_AGE_S, default 24 h). `iat` is required
   * (RFC 9068 section 2.2); an older token is refused whatever its `exp`, and so is an `iat` in the future beyond
   * the clock tolerance. Also bounds how long a revocation must be kept.
   */
  readonly maxTokenAgeS: number;
  readonly tenantClaim: readonly string[];
  readonly requiredScopes: readonly string[];
  readonly scopesSupported: readonly string[];
  readonly allowedOrigins: readonly string[];
  readonly allowedHosts: readonly string[];
  readonly maxBodyBytes: number;
  readonly sessionIdleTtlS: number;
  readonly maxSessionsPerSubject: number;
  /** Issuer (`iss`) of exchanged tokens and the `act` subject naming this server. */
  readonly exchangeIssuer: string;
  readonly exchangeTtlS: number;
  /** Optional external token-exchange endpoint (an identity provider that does RFC 8693 itself). */
  readonly externalExchange: {
    readonly tokenUrl: string;
    readonly clientId: string;
    readonly clientSecret: string;
  } | null;
  readonly egressMaxBytes: number;
  readonly egressTimeoutMs: number;
  /** Per-tenant quotas and request rates (src/tenant/quotas.ts). */
  readonly quotas: QuotaLimits;
  /** EMBEDDER, AI_MODEL, AI_DIMENSIONS (src/kb/placement-config.ts). */
  readonly embedder: EmbedderSetting;
  /** VECTOR_PLACEMENT, every named Vectorize binding checked to exist. */
  readonly vectorPlacement: VectorPlacementSetting;
  /** EXTRACTOR: how extraction runs segment documents (docs/extraction.md). */
  readonly extractor: ExtractorSetting;
  /** This deployment's own OAuth authorization server (src/oauth/), or null when it is off. */
  readonly oauth: OAuthServerConfig | null;
}

export interface JsonWebKeySet {
  readonly keys: readonly Record<string, unknown>[];
}

const list = (value: string | undefined): string[] =>
  (value ?? "")
    .split(/[\s,]+/)
    .map((item) => item.trim())
    .filter(Boolean);

const intInRange = (raw: string | undefined, fallback: number, min: number, max: number, name: string): number => {
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new KbError("ERR_CONFIG", `${name} must be an integer in [${min}, ${max}]`);
  }
  return value;
};

const httpsUrl = (production: boolean) =>
  z.string().refine((value) => {
    if (!URL.canParse(value)) return false;
    const url = new URL(value);
    return (url.protocol === "https:" || (!production && url.protocol === "http:")) && !url.hash && !url.search;
  }, "must be an absolute https URL without query or fragment");

const jwksSchema = z.object({ keys: z.array(z.record(z.string(), z.unknown())).min(1).max(100) });

/**
 * Tenant-neutral cache: the validated configuration of one env object. The env holds the deployment's bindings
 * and vars, identical for every tenant and request of an isolate (and of a tenant object), so it is parsed once
 * per env, not per request. Keyed weakly by the env object itself: a new env (a new deployment's isolate, a test's
 * overrides) is parsed afresh. A configuration that fails validation is never cached, so it keeps failing closed.
 */
const configs = new WeakMap<Env, Config>();

/**
 * Reads and validates the configuration. Invalid configuration throws ERR_CONFIG, which the edge turns into a
 * 503 for every route: the server never runs half-configured (fail closed).
 */
export function loadConfig(env: Env): Config {
  const cached = configs.get(env);
  if (cached) return cached;
  const config = Object.freeze(parseConfig(env));
  configs.set(env, config);
  return config;
}

/** Everything not "production" relaxes a check (the dev issuer, the dev sign-in), so a typo must not. */
const ENVIRONMENTS = ["production", "development", "test"] as const;

function parseConfig(env: Env): Config {
  if (!ENVIRONMENTS.includes(env.ENVIRONMENT as (typeof ENVIRONMENTS)[number])) {
    throw new KbError("ERR_CONFIG", `ENVIRONMENT must be one of ${ENVIRONMENTS.join(", ")}`);
  }
  const production = env.ENVIRONMENT === "production";
  const issuer = env.AUTH_ISSUER ?? "";
  if (!issuer) throw new KbError("ERR_CONFIG", "AUTH_ISSUER is required");
  if (production && (!httpsUrl(true).safeParse(issuer).success || new URL(issuer).hostname.endsWith(".invalid"))) {
    // Covers the dev issuer (https://dev-issuer.invalid) in any spelling.
    throw new KbError("ERR_CONFIG", "AUTH_ISSUER must be an https URL in production (the dev issuer is refused)");
  }
  const resource = httpsUrl(production).safeParse(env.MCP_RESOURCE);
  if (!resource.success) throw new KbError("ERR_CONFIG", "MCP_RESOURCE must be the canonical URL of the MCP endpoint");
  const resourceUrl = new URL(resource.data);

  let jwks: Config["jwks"];
  if (env.AUTH_JWKS_URL) {
    const url = httpsUrl(production).safeParse(env.AUTH_JWKS_URL);
    if (!url.success) throw new KbError("ERR_CONFIG", "AUTH_JWKS_URL must be an https URL");
    jwks = { kind: "remote", url: url.data };
  } else if (env.AUTH_JWKS) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(env.AUTH_JWKS);
    } catch {
      throw new KbError("ERR_CONFIG", "AUTH_JWKS is not JSON");
    }
    const keys = jwksSchema.safeParse(parsed);
    if (!keys.success) throw new KbError("ERR_CONFIG", "AUTH_JWKS must be a JWK set with at least one key");
    if (keys.data.keys.some((key) => "d" in key || "k" in key)) {
      // Private or symmetric key material has no place in a verifier's configuration.
      throw new KbError("ERR_CONFIG", "AUTH_JWKS must hold public asymmetric keys only");
    }
    const kids = keys.data.keys.map((key) => key.kid).filter((kid) => typeof kid === "string");
    if (new Set(kids).size !== kids.length) throw new KbError("ERR_CONFIG", "AUTH_JWKS has duplicate kid values");
    jwks = { kind: "inline", keys: keys.data };
  } else {
    throw new KbError("ERR_CONFIG", "AUTH_JWKS_URL or AUTH_JWKS is required");
  }

  const algorithms = env.AUTH_ALGORITHMS ? list(env.AUTH_ALGORITHMS) : ["ES256", "RS256", "PS256", "EdDSA", "Ed25519"];
  for (const alg of algorithms) {
    if (!(ASYMMETRIC_ALGORITHMS as readonly string[]).includes(alg)) {
      throw new KbError("ERR_CONFIG", `AUTH_ALGORITHMS: ${alg} is not an allowed asymmetric algorithm`);
    }
  }

  const tenantClaim = (env.TENANT_CLAIM || "tenant_id").split(".");
  if (tenantClaim.some((part) => !/^[A-Za-z0-9_:/-]{1,64}$/.test(part)) || tenantClaim.length > 5) {
    throw new KbError("ERR_CONFIG", "TENANT_CLAIM must be a claim name or a dotted path of up to 5 names");
  }

  const allowedHosts = list(env.ALLOWED_HOSTS).map((host) => host.toLowerCase());
  if (!allowedHosts.includes(resourceUrl.hostname)) allowedHosts.push(resourceUrl.hostname);

  const requiredScopes = list(env.REQUIRED_SCOPES);
  const oauth = oauthServer(env, production, resourceUrl.origin);
  const adminAudience = env.ADMIN_AUDIENCE || `${resourceUrl.origin}/admin`;
  if (adminAudience === resource.data) throw new KbError("ERR_CONFIG", "ADMIN_AUDIENCE must differ from MCP_RESOURCE");
  return {
    production,
    resource: resource.data,
    resourceOrigin: resourceUrl.origin,
    adminAudience,
    issuer,
    // The built-in authorization server is listed first when it is on: a client following the 401 signs in there.
    authorizationServers: [
      ...new Set([
        ...(oauth ? [oauth.issuer] : []),
        ...(env.AUTHORIZATION_SERVERS ? list(env.AUTHORIZATION_SERVERS) : [issuer]),
      ]),
    ],
    jwks,
    algorithms,
    tokenTyp: env.AUTH_TOKEN_TYP || null,
    clockToleranceS: intInRange(env.AUTH_CLOCK_TOLERANCE_S, 30, 0, 300, "AUTH_CLOCK_TOLERANCE_S"),
    maxTokenAgeS: intInRange(env.AUTH_MAX_TOKEN_AGE_S, 86_400, 60, 7 * 86_400, "AUTH_MAX_TOKEN_AGE_S"),
    tenantClaim,
    requiredScopes,
    scopesSupported: [...new Set([...requiredScopes, ...list(env.SCOPES_SUPPORTED)])],
    allowedOrigins: list(env.ALLOWED_ORIGINS).map((origin) => origin.toLowerCase()),
    allowedHosts,
    maxBodyBytes: intInRange(env.MAX_BODY_BYTES, 1_048_576, 1024, 4_194_304, "MAX_BODY_BYTES"),
    sessionIdleTtlS: intInRange(env.SESSION_IDLE_TTL_S, 1800, 60, 86_400, "SESSION_IDLE_TTL_S"),
    maxSessionsPerSubject: intInRange(env.MAX_SESSIONS_PER_SUBJECT, 64, 1, 1000, "MAX_SESSIONS_PER_SUBJECT"),
    exchangeIssuer: env.EXCHANGE_ISSUER || resourceUrl.origin,
    exchangeTtlS: intInRange(env.EXCHANGE_TTL_S, 300, 30, 300, "EXCHANGE_TTL_S"),
    externalExchange: externalExchange(env, production),
    egressMaxBytes: intInRange(env.EGRESS_MAX_BYTES, 16 * 1_048_576, 1024, 100 * 1_048_576, "EGRESS_MAX_BYTES"),
    egressTimeoutMs: intInRange(env.EGRESS_TIMEOUT_MS, 10_000, 100, 60_000, "EGRESS_TIMEOUT_MS"),
    quotas: quotas(env),
    embedder: parseEmbedder(env),
    vectorPlacement: parseVectorPlacement(env.VECTOR_PLACEMENT, env),
    extractor: parseExtractor(env),
    oauth,
  };
}

function externalExchange(env: Env, production: boolean): Config["externalExchange"] {
  if (!env.EXCHANGE_TOKEN_URL) return null;
  if (
    !httpsUrl(production).safeParse(env.EXCHANGE_TOKEN_URL).success ||
    !env.EXCHANGE_CLIENT_ID ||
    !env.EXCHANGE_CLIENT_SECRET
  ) {
    throw new KbError("ERR_CONFIG", "EXCHANGE_TOKEN_URL needs EXCHANGE_CLIENT_ID and EXCHANGE_CLIENT_SECRET");
  }
  return {
    tokenUrl: env.EXCHANGE_TOKEN_URL,
    clientId: env.EXCHANGE_CLIENT_ID,
    clientSecret: env.EXCHANGE_CLIENT_SECRET,
  };
}

function quotas(env: Env): QuotaLimits {
  const d = DEFAULT_QUOTAS;
  return {
    documents: intInRange(env.QUOTA_DOCUMENTS, d.documents, 1, 10_000_000, "QUOTA_DOCUMENTS"),
    documentBytes: intInRange(env.QUOTA_DOCUMENT_BYTES, d.documentBytes, 1024, 2 ** 50, "QUOTA_DOCUMENT_BYTES"),
    runsQueued: intInRange(env.QUOTA_RUNS_QUEUED, d.runsQueued, 1, 10_000, "QUOTA_RUNS_QUEUED"),
    sessions: intInRange(env.QUOTA_SESSIONS, d.sessions, 1, 100_000, "QUOTA_SESSIONS"),
    exchangedTokens: intInRange(env.QUOTA_EXCHANGED_TOKENS, d.exchangedTokens, 1, 100_000, "QUOTA_EXCHANGED_TOKENS"),
    requestsPerMinute: intInRange(
      env.RATE_LIMIT_PER_MINUTE,
      d.requestsPerMinute,
      1,
      10_000_000,
      "RATE_LIMIT_PER_MINUTE",
    ),
    subjectRequestsPerMinute: intInRange(
      env.RATE_LIMIT_SUBJECT_PER_MINUTE,
      d.subjectRequestsPerMinute,
      1,
      10_000_000,
      "RATE_LIMIT_SUBJECT_PER_MINUTE",
    ),
  };
}

// ---- OAuth authorization server (issue 14; src/oauth/). Kept in one block: the env reads for it live here. ----

export interface OAuthServerConfig {
  /** RFC 8414 issuer: this Worker's origin (the server is served by this Worker, docs/auth.md). */
  readonly issuer: string;
  readonly accessTokenTtlS: number;
  readonly refreshTokenTtlS: number;
  /** Lifetime of a dynamically registered client that is not used (renewed while used). */
  readonly clientTtlS: number;
  /** The dev sign-in page (choose tenant and subject). Never true in production. */
  readonly devSignIn: boolean;
  /**
   * Dev only (never in production): Client ID Metadata Documents of these https origins are fetched from the mapped
   * loopback origin instead (e2e: the test serves its client's document on loopback). Empty in production.
   */
  readonly devMetadataOrigins: ReadonlyMap<string, string>;
  /** Sign-in through the operator's OpenID Connect provider (src/oauth/upstream-oidc.ts), or null. */
  readonly upstream: UpstreamOidcConfig | null;
}

export interface UpstreamOidcConfig {
  readonly issuer: string;
  readonly clientId: string;
  /** Client secret (a Worker secret), or null for a public client (PKCE only). */
  readonly clientSecret: string | null;
  /** Claim holding the tenant id (dotted path), or null: the tenant comes from the verified email's domain mapping. */
  readonly tenantClaim: readonly string[] | null;
  readonly scopes: string;
}

/**
 * OAUTH_SERVER = "on" | "off" (default on outside production, off in production, where it needs an upstream
 * sign-in to be useful). OAUTH_DEV_SIGN_IN = "on" | "off" (default on outside production for a local resource only
 * — loopback, *.localhost, *.test; "on" in production is a configuration error: the dev sign-in lets anyone pick a
 * tenant).
 */
function oauthServer(env: Env, production: boolean, origin: string): OAuthServerConfig | null {
  const onOff = (raw: string | undefined, fallback: boolean, name: string): boolean => {
    if (raw === undefined || raw === "") return fallback;
    if (raw !== "on" && raw !== "off") throw new KbError("ERR_CONFIG", `${name} must be "on" or "off"`);
    return raw === "on";
  };
  // On by default only for a local resource (loopback, .localhost, .test): a deployment reachable by others gets
  // the dev sign-in (anyone picks a tenant) only when asked for by name, and never in production.
  const local = /^(localhost|127\.0\.0\.1|\[::1\])$|\.(localhost|test)$/.test(new URL(origin).hostname);
  const devSignIn = onOff(env.OAUTH_DEV_SIGN_IN, !production && local, "OAUTH_DEV_SIGN_IN");
  if (production && devSignIn) throw new KbError("ERR_CONFIG", "OAUTH_DEV_SIGN_IN cannot be on in production");
  if (!onOff(env.OAUTH_SERVER, !production, "OAUTH_SERVER")) return null;
  const devMetadataOrigins = new Map<string, string>();
  for (const pair of list(env.OAUTH_DEV_METADATA_ORIGINS)) {
    const [from, to] = pair.split("=");
    const fromUrl = URL.canParse(from ?? "") ? new URL(from ?? "") : null;
    const toUrl = URL.canParse(to ?? "") ? new URL(to ?? "") : null;
    if (
      production ||
      !fromUrl ||
      !toUrl ||
      fromUrl.protocol !== "https:" ||
      !/^(127\.0\.0\.1|localhost|\[::1\])$/.test(toUrl.hostname)
    ) {
      throw new KbError(
        "ERR_CONFIG",
        "OAUTH_DEV_METADATA_ORIGINS: https-origin=http://127.0.0.1:port pairs, outside production only",
      );
    }
    devMetadataOrigins.set(fromUrl.origin, toUrl.origin);
  }
  return {
    issuer: origin,
    accessTokenTtlS: intInRange(env.OAUTH_ACCESS_TOKEN_TTL_S, 3600, 60, 86_400, "OAUTH_ACCESS_TOKEN_TTL_S"),
    refreshTokenTtlS: intInRange(
      env.OAUTH_REFRESH_TOKEN_TTL_S,
      30 * 86_400,
      3600,
      365 * 86_400,
      "OAUTH_REFRESH_TOKEN_TTL_S",
    ),
    clientTtlS: intInRange(env.OAUTH_CLIENT_TTL_S, 30 * 86_400, 3600, 365 * 86_400, "OAUTH_CLIENT_TTL_S"),
    devSignIn,
    devMetadataOrigins,
    upstream: upstreamOidc(env, production),
  };
}

/** OAUTH_UPSTREAM_ISSUER, _CLIENT_ID, _CLIENT_SECRET (secret), _TENANT_CLAIM, _SCOPES (default "openid email"). */
function upstreamOidc(env: Env, production: boolean): UpstreamOidcConfig | null {
  if (!env.OAUTH_UPSTREAM_ISSUER) return null;
  if (!httpsUrl(production).safeParse(env.OAUTH_UPSTREAM_ISSUER).success || !env.OAUTH_UPSTREAM_CLIENT_ID) {
    throw new KbError("ERR_CONFIG", "OAUTH_UPSTREAM_ISSUER must be an https URL and needs OAUTH_UPSTREAM_CLIENT_ID");
  }
  const tenantClaim = env.OAUTH_UPSTREAM_TENANT_CLAIM ? env.OAUTH_UPSTREAM_TENANT_CLAIM.split(".") : null;
  if (tenantClaim && (tenantClaim.length > 5 || tenantClaim.some((part) => !/^[A-Za-z0-9_:/-]{1,64}$/.test(part)))) {
    throw new KbError("ERR_CONFIG", "OAUTH_UPSTREAM_TENANT_CLAIM must be a claim name or a dotted path");
  }
  const scopes = list(env.OAUTH_UPSTREAM_SCOPES || "openid email");
  if (!scopes.includes("openid")) throw new KbError("ERR_CONFIG", "OAUTH_UPSTREAM_SCOPES must include openid");
  return {
    issuer: env.OAUTH_UPSTREAM_ISSUER,
    clientId: env.OAUTH_UPSTREAM_CLIENT_ID,
    clientSecret: env.OAUTH_UPSTREAM_CLIENT_SECRET || null,
    tenantClaim,
    scopes: scopes.join(" "),
  };
}
