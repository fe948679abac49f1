import { env } from "cloudflare:workers";
import { importJWK, type JWK, type JWTPayload, SignJWT } from "jose";

export const ISSUER = "https://issuer.test/";
export const RESOURCE = "https://kb.test/mcp";
export const BASE = "https://kb.test";

type Alg = "ES256" | "RS256" | "EdDSA";
const KIDS: Record<Alg, string> = { ES256: "test-es256", RS256: "test-rs256", EdDSA: "test-eddsa" };

export interface TokenOptions {
  readonly tenant?: string | unknown;
  readonly sub?: string;
  readonly scope?: string;
  readonly alg?: Alg;
  readonly ttl?: number;
  readonly claims?: JWTPayload;
  readonly header?: Record<string, unknown>;
  readonly omit?: readonly string[];
}

export async function privateJwk(alg: Alg): Promise<JWK> {
  const keys = JSON.parse(env.TEST_PRIVATE_JWKS) as JWK[];
  const jwk = keys.find((key) => key.kid === KIDS[alg]);
  if (!jwk) throw new Error(`no test key for ${alg}`);
  return jwk;
}

/** A token as the trusted issuer would mint it; options bend individual claims for attack tests. */
export async function mintToken(options: TokenOptions = {}): Promise<string> {
  const alg = options.alg ?? "ES256";
  const now = Math.floor(Date.now() / 1000);
  const payload: JWTPayload = {
    tenant_id: options.tenant === undefined ? "acme" : options.tenant,
    scope: options.scope ?? "mcp kb.read kb.write",
    jti: crypto.randomUUID(),
    ...options.claims,
  };
  for (const claim of options.omit ?? []) delete payload[claim];
  let jwt = new SignJWT(payload)
    .setProtectedHeader({ alg, kid: KIDS[alg], typ: "at+jwt", ...options.header })
    .setIssuedAt(now);
  if (!options.omit?.includes("iss")) jwt = jwt.setIssuer(ISSUER);
  if (!options.omit?.includes("aud")) jwt = jwt.setAudience(RESOURCE);
  if (!options.omit?.includes("sub")) jwt = jwt.setSubject(options.sub ?? "alice");
  if (!options.omit?.includes("exp")) jwt = jwt.setExpirationTime(now + (options.ttl ?? 600));
  if (options.claims?.exp !== undefined) jwt = jwt.setExpirationTime(options.claims.exp);
  return jwt.sign(await importJWK(await privateJwk(alg), alg));
}

export function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}
