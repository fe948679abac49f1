import type { Identity } from "../auth/identity";
import { keyResolver } from "../auth/keys";
import { verifyAccessToken } from "../auth/verify-token";
import type { Config } from "../config";
import type { Env } from "../env";
import { KbError } from "../errors";
import { authorizationServer } from "./authorization-server";
import { identityFromGrantToken, isAuthorizationServerToken } from "./grant-user";

/**
 * One identity from either kind of access token: a JWT of the configured external issuer (verify-token.ts), or an
 * opaque token of the built-in authorization server (validated by the library against OAUTH_KV for this resource
 * only, then mapped by grant-user.ts). Both modes can be on together; the token's shape picks the verifier (a
 * compact JWS never contains ":"), and each verifier refuses what it did not issue.
 */
export async function verifyBearer(token: string, config: Config, env: Env): Promise<Identity> {
  if (!config.oauth || !isAuthorizationServerToken(token)) {
    return verifyAccessToken(token, config, keyResolver(config));
  }
  const validated = await authorizationServer(config).validateToken(config.resource, token, env);
  if (!validated) throw new KbError("ERR_TOKEN_EXPIRED", "unknown, revoked or expired access token");
  const grantId = token.split(":")[1] ?? "";
  return await identityFromGrantToken(validated, config, grantId);
}
