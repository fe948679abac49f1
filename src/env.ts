import type { ExtractionRun } from "./extract/extraction-run";
import type { TenantRegistry } from "./tenant/registry";
import type { TenantServer } from "./tenant/tenant-server";

/** Bindings and variables of the Worker (wrangler.toml `[vars]`, secrets, `.dev.vars`). */
export interface Env {
  readonly TENANT_SERVER: DurableObjectNamespace<TenantServer>;
  readonly ENVIRONMENT?: string;
  readonly MCP_RESOURCE?: string;
  readonly AUTH_ISSUER?: string;
  readonly AUTH_JWKS?: string;
  readonly AUTH_JWKS_URL?: string;
  readonly AUTH_ALGORITHMS?: string;
  readonly AUTH_TOKEN_TYP?: string;
  readonly AUTH_CLOCK_TOLERANCE_S?: string;
  readonly AUTH_MAX_TOKEN_AGE_S?: string;
  readonly AUTHORIZATION_SERVERS?: string;
  readonly TENANT_CLAIM?: string;
  readonly REQUIRED_SCOPES?: string;
  readonly SCOPES_SUPPORTED?: string;
  readonly ALLOWED_ORIGINS?: string;
  readonly ALLOWED_HOSTS?: string;
  readonly MAX_BODY_BYTES?: string;
  readonly SESSION_IDLE_TTL_S?: string;
  readonly MAX_SESSIONS_PER_SUBJECT?: string;
  readonly ADMIN_AUDIENCE?: string;
  readonly TENANT_REGISTRY: DurableObjectNamespace<TenantRegistry>;
  readonly DOCS: R2Bucket;
  /** Current master key epoch; each epoch's key is the secret MASTER_KEY_<EPOCH>. */
  readonly MASTER_KEY_EPOCH?: string;
  readonly EXCHANGE_ISSUER?: string;
  readonly EXCHANGE_TTL_S?: string;
  readonly EXCHANGE_TOKEN_URL?: string;
  readonly EXCHANGE_CLIENT_ID?: string;
  readonly EXCHANGE_CLIENT_SECRET?: string;
  readonly EGRESS_MAX_BYTES?: string;
  readonly EGRESS_TIMEOUT_MS?: string;
  readonly EXTRACTION_RUN: DurableObjectNamespace<ExtractionRun>;
  /** `deterministic` (default) or `model` (Workers AI; EXTRACTION_MODEL, optional AI_GATEWAY_ID). */
  readonly EXTRACTOR?: string;
  readonly EXTRACTION_MODEL?: string;
  readonly AI_GATEWAY_ID?: string;
  /** Vector placement per tenant (parsed by loadConfig, src/kb/placement-config.ts); names Vectorize bindings. */
  readonly VECTOR_PLACEMENT?: string;
  readonly EMBEDDER?: string;
  readonly AI?: unknown;
  readonly AI_MODEL?: string;
  readonly AI_DIMENSIONS?: string;
  /** Per-tenant quotas (src/tenant/quotas.ts, docs/storage.md). */
  readonly QUOTA_DOCUMENTS?: string;
  readonly QUOTA_DOCUMENT_BYTES?: string;
  readonly QUOTA_RUNS_QUEUED?: string;
  readonly QUOTA_SESSIONS?: string;
  readonly QUOTA_EXCHANGED_TOKENS?: string;
  readonly RATE_LIMIT_PER_MINUTE?: string;
  readonly RATE_LIMIT_SUBJECT_PER_MINUTE?: string;
  /** The built-in OAuth authorization server (src/oauth/, docs/auth.md): its grants, tokens and clients. */
  readonly OAUTH_KV: KVNamespace;
  readonly OAUTH_SERVER?: string;
  readonly OAUTH_DEV_SIGN_IN?: string;
  readonly OAUTH_ACCESS_TOKEN_TTL_S?: string;
  readonly OAUTH_REFRESH_TOKEN_TTL_S?: string;
  readonly OAUTH_CLIENT_TTL_S?: string;
  readonly OAUTH_DEV_METADATA_ORIGINS?: string;
  readonly OAUTH_UPSTREAM_ISSUER?: string;
  readonly OAUTH_UPSTREAM_CLIENT_ID?: string;
  readonly OAUTH_UPSTREAM_CLIENT_SECRET?: string;
  readonly OAUTH_UPSTREAM_TENANT_CLAIM?: string;
  readonly OAUTH_UPSTREAM_SCOPES?: string;
  /** Bounds dynamic client registration (a flood of registrations), wrangler.toml `[[ratelimits]]`. */
  readonly OAUTH_REGISTRATION_LIMITER?: RateLimit;
}

type WorkerBindings = Env;

declare global {
  namespace Cloudflare {
    interface Env extends WorkerBindings {}
    interface GlobalProps {
      mainModule: typeof import("./index");
      durableNamespaces: "TenantServer" | "TenantRegistry" | "ExtractionRun";
    }
  }
}
