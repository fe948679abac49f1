import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { UpstreamOidcConfig } from "../../src/config";
import { KbError } from "../../src/errors";
import {
  discover,
  type ProviderMetadata,
  redeemCode,
  verifiedEmailDomain,
  verifyIdToken,
} from "../../src/oauth/upstream-oidc";

const upstream: UpstreamOidcConfig = {
  issuer: "https://idp.test",
  clientId: "kb-client",
  clientSecret: null,
  tenantClaim: null,
  scopes: "openid email",
};
const metadata: ProviderMetadata = {
  issuer: "https://idp.test",
  authorizationEndpoint: "https://idp.test/auth",
  tokenEndpoint: "https://idp.test/token",
  jwksUri: "https://idp.test/jwks",
};

const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
const keys = createLocalJWKSet({ keys: [{ ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256" }] });
const attacker = await generateKeyPair("ES256");

async function idToken(claims: Record<string, unknown> = {}, key: CryptoKey = privateKey, alg = "ES256") {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    iss: upstream.issuer,
    aud: upstream.clientId,
    sub: "erin",
    nonce: "n-1",
    iat: now,
    exp: now + 300,
    ...claims,
  })
    .setProtectedHeader({ alg, kid: "k1" })
    .sign(key);
}

async function code(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    return error instanceof KbError ? error.code : "not a KbError";
  }
  return undefined;
}

describe("upstream ID token verification", () => {
  it("accepts a token signed by the provider for us with our nonce (control)", async () => {
    const claims = await verifyIdToken(await idToken(), metadata, upstream, "n-1", keys);
    expect(claims.sub).toBe("erin");
  });

  it.each([
    ["another nonce", { nonce: "n-2" }, "ERR_TOKEN_CLAIMS"],
    ["no nonce", { nonce: undefined }, "ERR_TOKEN_SIGNATURE"],
    ["another audience", { aud: "someone-else" }, "ERR_TOKEN_SIGNATURE"],
    ["another issuer", { iss: "https://evil.test" }, "ERR_TOKEN_SIGNATURE"],
    ["expired", { exp: Math.floor(Date.now() / 1000) - 120 }, "ERR_TOKEN_SIGNATURE"],
  ])("refuses %s", async (_label, claims, expected) => {
    expect(await code(verifyIdToken(await idToken(claims), metadata, upstream, "n-1", keys))).toBe(expected);
  });

  it("refuses a token signed by another key, and a symmetric algorithm", async () => {
    expect(await code(verifyIdToken(await idToken({}, attacker.privateKey), metadata, upstream, "n-1", keys))).toBe(
      "ERR_TOKEN_SIGNATURE",
    );
    const hmac = await new SignJWT({ iss: upstream.issuer, aud: upstream.clientId, sub: "x", nonce: "n-1" })
      .setProtectedHeader({ alg: "HS256" })
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(new Uint8Array(32));
    expect(await code(verifyIdToken(hmac, metadata, upstream, "n-1", keys))).toBe("ERR_TOKEN_SIGNATURE");
  });

  it("takes the email domain only when the provider verified the email", () => {
    expect(verifiedEmailDomain({ email: "Erin@Corp.Example", email_verified: true })).toBe("corp.example");
    expect(verifiedEmailDomain({ email: "erin@corp.example", email_verified: false })).toBeNull();
    // Look-alikes that lower-case into ASCII (the Kelvin sign becomes k) are refused, not folded.
    expect(verifiedEmailDomain({ email: "bob@\u212Aorp.example", email_verified: true })).toBeNull();
    expect(verifiedEmailDomain({ email: "erin@corp.example" })).toBeNull();
    expect(verifiedEmailDomain({ email: "erin@corp.example", email_verified: "true" })).toBeNull();
    expect(verifiedEmailDomain({ email: "no-at-sign", email_verified: true })).toBeNull();
  });
});

describe("an unreachable or broken provider is 503 ERR_AUTH_UNAVAILABLE, not an internal error", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("discovery: network failure, and an answer that is not JSON", async () => {
    vi.spyOn(globalThis, "fetch").mockRejectedValue(new TypeError("network connection lost"));
    await expect(discover({ ...upstream, issuer: "https://down.idp.test" })).rejects.toMatchObject({
      code: "ERR_AUTH_UNAVAILABLE",
    });
    vi.spyOn(globalThis, "fetch").mockResolvedValue(new Response("<html>", { status: 200 }));
    await expect(discover({ ...upstream, issuer: "https://html.idp.test" })).rejects.toMatchObject({
      code: "ERR_AUTH_UNAVAILABLE",
    });
  });

  it("code redemption: network failure", async () => {
    vi.spyOn(globalThis, "fetch").mockRejectedValue(new TypeError("network connection lost"));
    const redeemed = redeemCode(metadata, upstream, { code: "c", redirectUri: "https://kb.test/cb", verifier: "v" });
    await expect(redeemed).rejects.toMatchObject({ code: "ERR_AUTH_UNAVAILABLE" });
    await expect(redeemed).rejects.toBeInstanceOf(KbError);
  });
});
