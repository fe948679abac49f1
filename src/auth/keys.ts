import { createLocalJWKSet, createRemoteJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from "jose";
import type { Config } from "../config";

/** How long a fetched JWKS is trusted, and the minimum pause between refetches (an unknown `kid` can't force more). */
export const JWKS_CACHE_MAX_AGE_MS = 10 * 60_000;
export const JWKS_COOLDOWN_MS = 30_000;
export const JWKS_TIMEOUT_MS = 5_000;

/**
 * Remote key sets, one per JWKS URL. This is the only module-level cache in src/, and it is tenant-neutral: it
 * holds the configured issuer's public keys, chosen by server configuration and never by a request, identical for
 * every tenant. Keeping it per isolate is what makes the cooldown effective.
 */
const remoteKeySets = new Map<string, JWTVerifyGetKey>();

/** The verification key resolver for the configured issuer: the inline JWKS, or the remote set with cooldown. */
export function keyResolver(config: Config): JWTVerifyGetKey {
  if (config.jwks.kind === "inline") {
    return createLocalJWKSet(config.jwks.keys as unknown as JSONWebKeySet);
  }
  let resolver = remoteKeySets.get(config.jwks.url);
  if (!resolver) {
    resolver = createRemoteJWKSet(new URL(config.jwks.url), {
      cacheMaxAge: JWKS_CACHE_MAX_AGE_MS,
      cooldownDuration: JWKS_COOLDOWN_MS,
      timeoutDuration: JWKS_TIMEOUT_MS,
    });
    remoteKeySets.set(config.jwks.url, resolver);
  }
  return resolver;
}
