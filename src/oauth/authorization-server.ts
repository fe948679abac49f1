import { OAuthAuthorizationServer, OAuthError } from "@cloudflare/workers-oauth-provider";
import type { Config, OAuthServerConfig } from "../config";
import type { Env } from "../env";
import { log } from "../log";
import { tenantOfUserId } from "./grant-user";
import { tenantAcceptsGrants } from "./tenant-state";

export const AUTHORIZE_PATH = "/authorize";
export const AS_TOKEN_PATH = "/token";
export const REGISTER_PATH = "/register";
export const AS_METADATA_PATH = "/.well-known/oauth-authorization-server";

/**
 * The built-in authorization server (@cloudflare/workers-oauth-provider): authorization code with PKCE S256,
 * refresh-token rotation, RFC 8414 metadata, RFC 7591 registration, Client ID Metadata Documents, RFC 8707
 * resource binding, RFC 7009 revocation; tokens, codes and secrets only as hashes in OAUTH_KV, props encrypted.
 * This module only configures it; /authorize (sign-in and consent) is ours (authorize-route.ts).
 *
 * Tenant-neutral cache: one instance per distinct configuration, built from server configuration only (never from a
 * request), identical for every tenant; bounded like the key-set cache in src/auth/keys.ts.
 */
const servers = new Map<string, OAuthAuthorizationServer<Env>>();
const MAX_SERVERS = 4;

export function authorizationServer(config: Config): OAuthAuthorizationServer<Env> {
  const oauth = requireOAuth(config);
  const key = JSON.stringify([config.resource, config.scopesSupported, oauth, [...oauth.devMetadataOrigins]]);
  const cached = servers.get(key);
  if (cached) return cached;
  const server = new OAuthAuthorizationServer<Env>({
    issuer: oauth.issuer,
    resources: [config.resource],
    scopesSupported: [...config.scopesSupported],
    authorizeEndpoint: AUTHORIZE_PATH,
    tokenEndpoint: AS_TOKEN_PATH,
    clientRegistrationEndpoint: REGISTER_PATH,
    clientIdMetadataDocumentEnabled: true,
    accessTokenTTL: oauth.accessTokenTtlS,
    refreshTokenTTL: oauth.refreshTokenTtlS,
    clientRegistrationTTL: oauth.clientTtlS,
    // Runs at code redemption and at every refresh: an offboarded tenant's grant is refused and, because the
    // error is invalid_grant, revoked with its tokens by the library (offboarding also revokes them up front).
    tokenExchangeCallback: async ({ userId, env }) => {
      const tenant = tenantOfUserId(userId);
      if (!tenant || !(await tenantAcceptsGrants(env, tenant))) {
        throw new OAuthError("invalid_grant", { description: "The grant is no longer valid." });
      }
    },
    onError: ({ code, status, internal }) => {
      log(status >= 500 ? "error" : "warn", {
        event: "oauth.refused",
        code,
        status,
        detail: typeof internal?.reason === "string" ? internal.reason : undefined,
      });
    },
  });
  if (servers.size >= MAX_SERVERS) servers.clear();
  servers.set(key, server);
  return server;
}

export function requireOAuth(config: Config): OAuthServerConfig {
  if (!config.oauth) throw new OAuthError("invalid_request", { description: "authorization server is off" });
  return config.oauth;
}
