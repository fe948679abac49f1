import { base64url, createLocalJWKSet, createRemoteJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from "jose";
import type { Config } from "../config";
import { KbError } from "../errors";

/** How long a fetched JWKS is trusted, and the minimum pause between refetches (an unknown `kid` can't force more). */
export const JWKS_CACHE_MAX_AGE_MS = 10 * 60_000;
export const JWKS_COOLDOWN_MS = 30_000;
export const JWKS_TIMEOUT_MS = 5_000;

/**
 * Key resolvers, one per configured key source (inline JWKS or JWKS URL). A tenant-neutral module-level cache: it
 * holds the configured issuer's public keys, chosen by server configuration and never by a request, identical for
 * every tenant. Keeping it per isolate is what makes the remote cooldown effective, and spares re-importing inline
 * keys on every request. Bounded: configuration has one source. `byConfig` (also tenant-neutral) skips computing
 * the source's cache key for a configuration object already seen (loadConfig returns one object per env).
 */
const keySets = new Map<string, JWTVerifyGetKey>();
const byConfig = new WeakMap<Config, JWTVerifyGetKey>();
const MAX_KEY_SETS = 8;

/** The verification key resolver for the configured issuer: the inline JWKS, or the remote set with cooldown. */
export function keyResolver(config: Config): JWTVerifyGetKey {
  const known = byConfig.get(config);
  if (known) return known;
  const jwks = config.jwks;
  const cacheKey = jwks.kind === "inline" ? `inline:${JSON.stringify(jwks.keys)}` : `remote:${jwks.url}`;
  const cached = keySets.get(cacheKey);
  if (cached) {
    byConfig.set(config, cached);
    return cached;
  }
  const resolver = refuseWeakKeys(
    jwks.kind === "inline"
      ? createLocalJWKSet(jwks.keys as unknown as JSONWebKeySet)
      : createRemoteJWKSet(new URL(jwks.url), {
          cacheMaxAge: JWKS_CACHE_MAX_AGE_MS,
          cooldownDuration: JWKS_COOLDOWN_MS,
          timeoutDuration: JWKS_TIMEOUT_MS,
        }),
  );
  if (keySets.size >= MAX_KEY_SETS) keySets.clear();
  keySets.set(cacheKey, resolver);
  byConfig.set(config, resolver);
  return resolver;
}

/**
 * Small primes of the ROCA fingerprint (CVE-2017-15361): the moduli of the factorable Infineon RSA keys are, modulo
 * each of these primes, a power of 65537. A random modulus passes all of them with negligible probability.
 */
const ROCA_PRIMES = [
  3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113,
  127, 131, 137, 139, 149, 151, 157, 163, 167,
];

/** Whether an RSA modulus (big-endian bytes) carries the ROCA fingerprint. */
export function hasRocaFingerprint(modulus: Uint8Array): boolean {
  return ROCA_PRIMES.every((prime) => {
    let residue = 0;
    for (const byte of modulus) residue = (residue * 256 + byte) % prime;
    for (let power = 1, i = 0; i < prime; i++, power = (power * 65537) % prime) {
      if (power === residue) return true;
    }
    return false;
  });
}

/** Refuses RSA keys with the ROCA fingerprint even if the key set lists them: their private keys are computable. */
function refuseWeakKeys(resolver: JWTVerifyGetKey): JWTVerifyGetKey {
  return async (protectedHeader, token) => {
    const key = await resolver(protectedHeader, token);
    if (key instanceof CryptoKey && key.algorithm.name.startsWith("RSA")) {
      const { n } = (await crypto.subtle.exportKey("jwk", key)) as JsonWebKey;
      if (!n || hasRocaFingerprint(base64url.decode(n))) {
        throw new KbError("ERR_TOKEN_KEY", "verification key refused (ROCA fingerprint)");
      }
    }
    return key;
  };
}
