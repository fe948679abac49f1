import { env } from "cloudflare:workers";
import {
  base64url,
  CompactSign,
  decodeJwt,
  decodeProtectedHeader,
  importJWK,
  type JWK,
  type JWTHeaderParameters,
  type JWTPayload,
  jwtVerify,
  SignJWT,
} from "jose";
import { describe, expect, it } from "vitest";
import { keyResolver } from "../../src/auth/keys";
import { bearerFromRequest, verifyAccessToken } from "../../src/auth/verify-token";
import { type Config, loadConfig, MAX_TOKEN_BYTES } from "../../src/config";
import { type ErrorCode, KbError } from "../../src/errors";
import { ISSUER, mintToken, privateJwk, RESOURCE } from "../helpers/tokens";

const config = loadConfig(env);
const now = () => Math.floor(Date.now() / 1000);

/** The attacker's private key: same `kid` and `alg` as the trusted ES256 key, never in AUTH_JWKS. */
const attackerJwk = JSON.parse(env.TEST_ATTACKER_JWK) as JWK;
const attackerPublicJwk: JWK = (({ d: _d, ...pub }) => pub)(attackerJwk);
const trustedPublicJwks = (JSON.parse(env.AUTH_JWKS ?? "{}") as { keys: JWK[] }).keys;

function claims(extra: JWTPayload = {}): JWTPayload {
  return {
    iss: ISSUER,
    aud: RESOURCE,
    sub: "alice",
    tenant_id: "acme",
    scope: "mcp kb.read",
    iat: now(),
    exp: now() + 600,
    jti: crypto.randomUUID(),
    ...extra,
  };
}

/** Signs exactly the given header and payload (no defaults added) with a JWK or raw symmetric key bytes. */
async function sign(
  payload: JWTPayload,
  header: JWTHeaderParameters,
  key: JWK | Uint8Array,
  crit?: Record<string, boolean>,
): Promise<string> {
  const signingKey = key instanceof Uint8Array ? key : await importJWK(key, header.alg);
  return new SignJWT(payload).setProtectedHeader(header).sign(signingKey, crit ? { crit } : undefined);
}

async function signTrusted(payload: JWTPayload, header: Partial<JWTHeaderParameters> = {}): Promise<string> {
  return sign(payload, { alg: "ES256", kid: "test-es256", typ: "at+jwt", ...header }, await privateJwk("ES256"));
}

function encodeSegment(value: unknown): string {
  return base64url.encode(JSON.stringify(value));
}

/** A compact JWS assembled by hand: used for tokens no signing library would produce. */
function handmade(header: unknown, payload: unknown, signature = ""): string {
  return `${encodeSegment(header)}.${encodeSegment(payload)}.${signature}`;
}

async function outcome(token: string, cfg: Config = config): Promise<ErrorCode | "ok"> {
  try {
    await verifyAccessToken(token, cfg, keyResolver(cfg));
    return "ok";
  } catch (error) {
    if (error instanceof KbError) return error.code;
    throw error;
  }
}

async function hmacKeyFromPublicKey(kid: string, format: "jwk-json" | "spki"): Promise<Uint8Array> {
  const jwk = trustedPublicJwks.find((key) => key.kid === kid);
  if (!jwk) throw new Error(`no trusted key ${kid}`);
  if (format === "jwk-json") return new TextEncoder().encode(JSON.stringify(jwk));
  const key = await importJWK(jwk, jwk.alg);
  if (!(key instanceof CryptoKey)) throw new Error("expected a CryptoKey");
  return new Uint8Array((await crypto.subtle.exportKey("spki", key)) as ArrayBuffer);
}

interface AttackCase {
  readonly name: string;
  readonly token: () => Promise<string>;
  readonly code: ErrorCode;
}

const cases: AttackCase[] = [
  // Algorithm attacks.
  {
    name: "alg none, empty signature (unsigned token)",
    token: async () => handmade({ alg: "none", typ: "JWT" }, claims()),
    code: "ERR_TOKEN_MALFORMED",
  },
  {
    name: "alg none with a trusted kid and a bogus signature",
    token: async () => handmade({ alg: "none", kid: "test-es256" }, claims(), "AAAA"),
    code: "ERR_TOKEN_ALG",
  },
  {
    name: "alg NONE (case variant)",
    token: async () => handmade({ alg: "NONE" }, claims(), "AAAA"),
    code: "ERR_TOKEN_ALG",
  },
  {
    name: "no alg at all",
    token: async () => handmade({ kid: "test-es256" }, claims(), "AAAA"),
    code: "ERR_TOKEN_ALG",
  },
  {
    name: "alg as a non-string",
    token: async () => handmade({ alg: ["ES256"], kid: "test-es256" }, claims(), "AAAA"),
    code: "ERR_TOKEN_ALG",
  },
  {
    name: "HS256 keyed with the trusted RSA public key (SPKI bytes)",
    token: async () =>
      sign(claims(), { alg: "HS256", kid: "test-rs256" }, await hmacKeyFromPublicKey("test-rs256", "spki")),
    code: "ERR_TOKEN_ALG",
  },
  {
    name: "HS256 keyed with the trusted EC public JWK (JSON bytes)",
    token: async () =>
      sign(claims(), { alg: "HS256", kid: "test-es256" }, await hmacKeyFromPublicKey("test-es256", "jwk-json")),
    code: "ERR_TOKEN_ALG",
  },
  {
    name: "PS256 header on the trusted RS256 key (JWK alg pins the algorithm)",
    token: async () => {
      const { alg: _alg, ...rsa } = await privateJwk("RS256");
      return sign(claims(), { alg: "PS256", kid: "test-rs256" }, { ...rsa, alg: "PS256" });
    },
    code: "ERR_TOKEN_KEY",
  },
  // Key selection attacks.
  {
    name: "unknown kid",
    token: async () => signTrusted(claims(), { kid: "no-such-key" }),
    code: "ERR_TOKEN_KEY",
  },
  {
    name: "kid with path characters",
    token: async () => signTrusted(claims(), { kid: "../../etc/passwd" }),
    code: "ERR_TOKEN_KEY",
  },
  {
    name: "kid with SQL characters",
    token: async () => signTrusted(claims(), { kid: "' OR 1=1 --" }),
    code: "ERR_TOKEN_KEY",
  },
  {
    name: "kid too long",
    token: async () => signTrusted(claims(), { kid: "k".repeat(257) }),
    code: "ERR_TOKEN_KEY",
  },
  {
    name: "kid with a control character",
    token: async () => signTrusted(claims(), { kid: "test-es256\u0000" }),
    code: "ERR_TOKEN_KEY",
  },
  {
    name: "kid that is not a string",
    token: async () => handmade({ alg: "ES256", kid: 7 }, claims(), "AAAA"),
    code: "ERR_TOKEN_KEY",
  },
  {
    name: "attacker key with the trusted kid",
    token: async () => sign(claims(), { alg: "ES256", kid: "test-es256" }, attackerJwk),
    code: "ERR_TOKEN_SIGNATURE",
  },
  {
    name: "attacker key with the trusted kid and the attacker's key embedded as jwk",
    token: async () => sign(claims(), { alg: "ES256", kid: "test-es256", jwk: attackerPublicJwk }, attackerJwk),
    code: "ERR_TOKEN_SIGNATURE",
  },
  {
    name: "attacker key, no kid, attacker's key embedded as jwk",
    token: async () => sign(claims(), { alg: "ES256", jwk: attackerPublicJwk }, attackerJwk),
    code: "ERR_TOKEN_SIGNATURE",
  },
  {
    name: "attacker key with jku pointing to the attacker's key set",
    token: async () =>
      sign(claims(), { alg: "ES256", kid: "attacker", jku: "https://attacker.example/jwks.json" }, attackerJwk),
    code: "ERR_TOKEN_KEY",
  },
  {
    name: "attacker key with the trusted kid and jku",
    token: async () =>
      sign(claims(), { alg: "ES256", kid: "test-es256", jku: "https://attacker.example/jwks.json" }, attackerJwk),
    code: "ERR_TOKEN_SIGNATURE",
  },
  {
    name: "attacker key with the trusted kid and x5u",
    token: async () =>
      sign(claims(), { alg: "ES256", kid: "test-es256", x5u: "https://attacker.example/cert.pem" }, attackerJwk),
    code: "ERR_TOKEN_SIGNATURE",
  },
  // Header extensions.
  {
    name: "unknown crit extension",
    token: async () =>
      sign(
        claims(),
        { alg: "ES256", kid: "test-es256", crit: ["x-unknown"], "x-unknown": true },
        await privateJwk("ES256"),
        { "x-unknown": true },
      ),
    code: "ERR_TOKEN_MALFORMED",
  },
  {
    name: "crit naming the b64 extension (with b64 true)",
    token: async () =>
      sign(claims(), { alg: "ES256", kid: "test-es256", crit: ["b64"], b64: true }, await privateJwk("ES256")),
    code: "ERR_TOKEN_MALFORMED",
  },
  // Lifetime.
  {
    name: "expired beyond the clock tolerance",
    token: async () => signTrusted(claims({ iat: now() - 700, exp: now() - config.clockToleranceS - 60 })),
    code: "ERR_TOKEN_EXPIRED",
  },
  {
    name: "nbf in the future beyond the clock tolerance",
    token: async () => signTrusted(claims({ nbf: now() + config.clockToleranceS + 60 })),
    code: "ERR_TOKEN_NOT_YET_VALID",
  },
  {
    name: "missing exp",
    token: async () => signTrusted(claims({ exp: undefined })),
    code: "ERR_TOKEN_CLAIMS",
  },
  {
    name: "exp that is not a number",
    token: async () => signTrusted(claims({ exp: "tomorrow" as unknown as number })),
    code: "ERR_TOKEN_CLAIMS",
  },
  {
    name: "nbf that is not a number",
    token: async () => signTrusted(claims({ nbf: "soon" as unknown as number })),
    code: "ERR_TOKEN_CLAIMS",
  },
  // Issuer, audience, subject.
  {
    name: "wrong iss",
    token: async () => signTrusted(claims({ iss: "https://attacker.example/" })),
    code: "ERR_TOKEN_CLAIMS",
  },
  {
    name: "iss differing only by the trailing slash",
    token: async () => signTrusted(claims({ iss: ISSUER.replace(/\/$/, "") })),
    code: "ERR_TOKEN_CLAIMS",
  },
  {
    name: "missing iss",
    token: async () => signTrusted(claims({ iss: undefined })),
    code: "ERR_TOKEN_CLAIMS",
  },
  {
    name: "wrong aud (another resource)",
    token: async () => signTrusted(claims({ aud: "https://other.test/mcp" })),
    code: "ERR_TOKEN_WRONG_AUDIENCE",
  },
  {
    name: "aud is the origin, not the resource",
    token: async () => signTrusted(claims({ aud: "https://kb.test" })),
    code: "ERR_TOKEN_WRONG_AUDIENCE",
  },
  {
    name: "missing aud",
    token: async () => signTrusted(claims({ aud: undefined })),
    code: "ERR_TOKEN_CLAIMS",
  },
  {
    name: "missing sub",
    token: async () => signTrusted(claims({ sub: undefined })),
    code: "ERR_TOKEN_CLAIMS",
  },
  {
    name: "sub with a space",
    token: async () => signTrusted(claims({ sub: "alice smith" })),
    code: "ERR_TOKEN_SUBJECT",
  },
  // Tenant claim.
  {
    name: "missing tenant claim",
    token: async () => signTrusted(claims({ tenant_id: undefined })),
    code: "ERR_TOKEN_TENANT",
  },
  {
    name: "tenant upper case",
    token: async () => signTrusted(claims({ tenant_id: "Acme" })),
    code: "ERR_TOKEN_TENANT",
  },
  { name: "tenant ../x", token: async () => signTrusted(claims({ tenant_id: "../x" })), code: "ERR_TOKEN_TENANT" },
  {
    name: "tenant with a Cyrillic look-alike 'а'",
    token: async () => signTrusted(claims({ tenant_id: "\u0430cme" })),
    code: "ERR_TOKEN_TENANT",
  },
  {
    name: "tenant with a trailing newline",
    token: async () => signTrusted(claims({ tenant_id: "acme\n" })),
    code: "ERR_TOKEN_TENANT",
  },
  { name: "tenant empty", token: async () => signTrusted(claims({ tenant_id: "" })), code: "ERR_TOKEN_TENANT" },
  {
    name: "tenant one character",
    token: async () => signTrusted(claims({ tenant_id: "a" })),
    code: "ERR_TOKEN_TENANT",
  },
  {
    name: "tenant 64 characters",
    token: async () => signTrusted(claims({ tenant_id: "a".repeat(64) })),
    code: "ERR_TOKEN_TENANT",
  },
  {
    name: "tenant starting with a hyphen",
    token: async () => signTrusted(claims({ tenant_id: "-acme" })),
    code: "ERR_TOKEN_TENANT",
  },
  {
    name: "tenant as an array",
    token: async () => signTrusted(claims({ tenant_id: ["acme"] })),
    code: "ERR_TOKEN_TENANT",
  },
  {
    name: "tenant as an object",
    token: async () => signTrusted(claims({ tenant_id: { id: "acme" } })),
    code: "ERR_TOKEN_TENANT",
  },
  { name: "tenant as a number", token: async () => signTrusted(claims({ tenant_id: 42 })), code: "ERR_TOKEN_TENANT" },
  { name: "tenant null", token: async () => signTrusted(claims({ tenant_id: null })), code: "ERR_TOKEN_TENANT" },
  // Scopes.
  {
    name: "scope claim that is neither a string nor an array",
    token: async () => signTrusted(claims({ scope: 7 })),
    code: "ERR_TOKEN_CLAIMS",
  },
  {
    name: "scp array with a non-string member",
    token: async () => signTrusted(claims({ scope: undefined, scp: ["mcp", 1] })),
    code: "ERR_TOKEN_CLAIMS",
  },
  {
    name: "jti that is not a string",
    token: async () => signTrusted(claims({ jti: 5 as unknown as string })),
    code: "ERR_TOKEN_CLAIMS",
  },
  // Shape and size.
  {
    name: "oversized but validly signed token",
    token: async () => signTrusted(claims({ pad: "x".repeat(MAX_TOKEN_BYTES) })),
    code: "ERR_TOKEN_TOO_LARGE",
  },
  { name: "empty string", token: async () => "", code: "ERR_TOKEN_MISSING" },
  { name: "garbage", token: async () => "garbage", code: "ERR_TOKEN_MALFORMED" },
  { name: "two segments", token: async () => "eyJhbGciOiJFUzI1NiJ9.e30", code: "ERR_TOKEN_MALFORMED" },
  {
    name: "four segments",
    token: async () => `${await signTrusted(claims())}.AAAA`,
    code: "ERR_TOKEN_MALFORMED",
  },
  {
    name: "base64 padding in a segment",
    token: async () => (await signTrusted(claims())).replace(".", "=."),
    code: "ERR_TOKEN_MALFORMED",
  },
  {
    name: "whitespace inside the token",
    token: async () => (await signTrusted(claims())).replace(".", " ."),
    code: "ERR_TOKEN_MALFORMED",
  },
  { name: "header is not JSON", token: async () => "bm90LWpzb24.e30.AAAA", code: "ERR_TOKEN_MALFORMED" },
  {
    name: "header is a JSON array",
    token: async () => `${encodeSegment(["ES256"])}.e30.AAAA`,
    code: "ERR_TOKEN_MALFORMED",
  },
  {
    name: "payload is not JSON (signed by the trusted key)",
    token: async () => {
      const key = await importJWK(await privateJwk("ES256"), "ES256");
      return new CompactSign(new TextEncoder().encode("not json"))
        .setProtectedHeader({ alg: "ES256", kid: "test-es256" })
        .sign(key);
    },
    code: "ERR_TOKEN_MALFORMED",
  },
  {
    name: "trusted signature, payload swapped afterwards",
    token: async () => {
      const [header, , signature] = (await signTrusted(claims({ tenant_id: "acme" }))).split(".");
      return `${header}.${encodeSegment(claims({ tenant_id: "victim" }))}.${signature}`;
    },
    code: "ERR_TOKEN_SIGNATURE",
  },
  {
    name: "trusted signature truncated",
    token: async () => (await signTrusted(claims())).slice(0, -4),
    code: "ERR_TOKEN_SIGNATURE",
  },
];

describe("verifyAccessToken attack table", () => {
  it.each(cases)("$name -> $code", async ({ token, code }) => {
    expect(await outcome(await token())).toBe(code);
  });

  it("the HS256 confusion tokens are genuine: a verifier keyed with the public bytes would accept them", async () => {
    // Control for the two key-confusion cases above: the attack only means something if the MAC is right.
    for (const [kid, format] of [
      ["test-rs256", "spki"],
      ["test-es256", "jwk-json"],
    ] as const) {
      const secret = await hmacKeyFromPublicKey(kid, format);
      const token = await sign(claims(), { alg: "HS256", kid }, secret);
      const { payload } = await jwtVerify(token, secret, { algorithms: ["HS256"] });
      expect(payload.tenant_id).toBe("acme");
    }
  });

  it("the attacker token is genuine: it verifies with the attacker's public key", async () => {
    const token = await sign(claims(), { alg: "ES256", kid: "test-es256", jwk: attackerPublicJwk }, attackerJwk);
    await expect(jwtVerify(token, await importJWK(attackerPublicJwk, "ES256"))).resolves.toBeTruthy();
  });
});

describe("verifyAccessToken accepts what it should", () => {
  it.each(["ES256", "RS256", "EdDSA"] as const)("happy path %s", async (alg) => {
    const token = await mintToken({ alg, tenant: "acme-corp", sub: "user-1", scope: "mcp kb.read kb.write" });
    const { jti, exp, iat } = decodeJwt(token);
    expect(decodeProtectedHeader(token).alg).toBe(alg);
    const identity = await verifyAccessToken(token, config, keyResolver(config));
    expect(identity).toEqual({
      tenant: "acme-corp",
      subject: "user-1",
      scopes: ["mcp", "kb.read", "kb.write"],
      tokenId: jti,
      expiresAt: exp,
      issuedAt: iat,
    });
  });

  it("scopes from an scp array, de-duplicated", async () => {
    const token = await signTrusted(claims({ scope: undefined, scp: ["mcp", "kb.read", "mcp"] }));
    const identity = await verifyAccessToken(token, config, keyResolver(config));
    expect(identity.scopes).toEqual(["mcp", "kb.read"]);
  });

  it("scope string takes precedence over scp; extra spaces are ignored", async () => {
    const token = await signTrusted(claims({ scope: " kb.read  mcp ", scp: ["kb.write"] }));
    expect((await verifyAccessToken(token, config, keyResolver(config))).scopes).toEqual(["kb.read", "mcp"]);
  });

  it("no scope claim means no scopes; no jti means tokenId null", async () => {
    const token = await signTrusted(claims({ scope: undefined, jti: undefined }));
    const identity = await verifyAccessToken(token, config, keyResolver(config));
    expect(identity.scopes).toEqual([]);
    expect(identity.tokenId).toBeNull();
  });

  it("aud as an array containing the resource", async () => {
    const token = await signTrusted(claims({ aud: ["https://other.test/", RESOURCE] }));
    expect((await verifyAccessToken(token, config, keyResolver(config))).tenant).toBe("acme");
  });

  it("tenant boundaries: 2 and 63 characters, digits and hyphens", async () => {
    for (const tenant of ["ab", "a".repeat(63), "0-tenant-9"]) {
      const token = await signTrusted(claims({ tenant_id: tenant }));
      expect((await verifyAccessToken(token, config, keyResolver(config))).tenant).toBe(tenant);
    }
  });

  it("clock tolerance: just expired and almost valid tokens are accepted within it", async () => {
    const slack = Math.max(config.clockToleranceS - 10, 1);
    expect(config.clockToleranceS).toBeGreaterThan(10);
    expect(await outcome(await signTrusted(claims({ exp: now() - slack })))).toBe("ok");
    expect(await outcome(await signTrusted(claims({ nbf: now() + slack })))).toBe("ok");
  });

  it("an explicit clock (currentDate) is honoured", async () => {
    const token = await signTrusted(claims({ exp: now() + 600 }));
    const later = new Date((now() + 3600) * 1000);
    await expect(verifyAccessToken(token, config, keyResolver(config), { currentDate: later })).rejects.toMatchObject({
      code: "ERR_TOKEN_EXPIRED",
    });
  });

  it("a token of exactly the size limit is accepted, one character more is refused", async () => {
    const exact = await trustedTokenOfLength(MAX_TOKEN_BYTES);
    expect(exact).toHaveLength(MAX_TOKEN_BYTES);
    expect(await outcome(exact)).toBe("ok");
    expect(await outcome(`${exact}A`)).toBe("ERR_TOKEN_TOO_LARGE");
  });
});

/** A validly signed ES256 token of exactly `target` characters, grown with a padding claim. */
async function trustedTokenOfLength(target: number): Promise<string> {
  // Unpadded base64url never produces lengths of 1 mod 4, so vary the jti length too until one lands exactly.
  for (let jti = 1; jti <= 4; jti++) {
    const probe = await signTrusted(claims({ pad: "", jti: "j".repeat(jti) }));
    const start = Math.floor(((target - probe.length) * 3) / 4) - 4;
    for (let pad = start; pad < start + 10; pad++) {
      const token = await signTrusted(claims({ pad: "x".repeat(pad), jti: "j".repeat(jti) }));
      if (token.length === target) return token;
    }
  }
  throw new Error(`could not build a token of exactly ${target} characters`);
}

describe("headers that carry key material are ignored", () => {
  const carriers: [string, Partial<JWTHeaderParameters>][] = [
    ["jku", { jku: "https://attacker.example/jwks.json" }],
    ["x5u", { x5u: "https://attacker.example/cert.pem" }],
    ["jwk", { jwk: attackerPublicJwk }],
    ["x5c", { x5c: ["MIIBattacker"] }],
  ];
  it.each(carriers)(
    "a trusted token that also carries %s still verifies with the trusted key",
    async (name, header) => {
      const token = await signTrusted(claims({ tenant_id: "acme" }), header);
      expect(Object.keys(decodeProtectedHeader(token))).toContain(name);
      const identity = await verifyAccessToken(token, config, keyResolver(config));
      expect(identity.tenant).toBe("acme");
    },
  );
});

describe("configuration-dependent checks", () => {
  it("the algorithm allow-list applies to trusted keys too", async () => {
    const rsOnly = loadConfig({ ...env, AUTH_ALGORITHMS: "RS256" });
    expect(await outcome(await mintToken({ alg: "ES256" }), rsOnly)).toBe("ERR_TOKEN_ALG");
    expect(await outcome(await mintToken({ alg: "RS256" }), rsOnly)).toBe("ok");
  });

  it("the allow-list cannot be widened to symmetric algorithms or none", () => {
    for (const algorithms of ["HS256", "none", "ES256,HS512"]) {
      let code: string | null = null;
      try {
        loadConfig({ ...env, AUTH_ALGORITHMS: algorithms });
      } catch (error) {
        code = error instanceof KbError ? error.code : "not a KbError";
      }
      expect(code).toBe("ERR_CONFIG");
    }
  });

  it("a configured typ is enforced (media-type normalised)", async () => {
    const typed = loadConfig({ ...env, AUTH_TOKEN_TYP: "at+jwt" });
    expect(await outcome(await signTrusted(claims(), { typ: "at+jwt" }), typed)).toBe("ok");
    expect(await outcome(await signTrusted(claims(), { typ: "application/at+jwt" }), typed)).toBe("ok");
    expect(await outcome(await signTrusted(claims(), { typ: "JWT" }), typed)).toBe("ERR_TOKEN_CLAIMS");
    expect(await outcome(await signTrusted(claims(), { typ: undefined }), typed)).toBe("ERR_TOKEN_CLAIMS");
  });

  it("a key set with two keys under one kid is refused by configuration (never verifies ambiguously)", async () => {
    expect(() =>
      loadConfig({
        ...env,
        AUTH_JWKS: JSON.stringify({ keys: [...trustedPublicJwks, { ...attackerPublicJwk, use: "sig" }] }),
      }),
    ).toThrow(expect.objectContaining({ code: "ERR_CONFIG" }));
  });

  describe("dotted tenant claim path", () => {
    const dotted = loadConfig({ ...env, TENANT_CLAIM: "org.tenant" });

    it("reads the nested claim", async () => {
      const token = await signTrusted(claims({ tenant_id: undefined, org: { tenant: "nested-co" } }));
      expect((await verifyAccessToken(token, dotted, keyResolver(dotted))).tenant).toBe("nested-co");
    });

    it.each([
      ["a flat claim literally named org.tenant", { "org.tenant": "nested-co" }],
      ["org as a string", { org: "nested-co" }],
      ["org as an array", { org: ["nested-co"] }],
      ["org null", { org: null }],
      ["only the default tenant_id claim", { tenant_id: "acme" }],
      ["nested tenant with bad characters", { org: { tenant: "Nested/Co" } }],
      ["nested tenant as an object", { org: { tenant: { id: "nested-co" } } }],
    ])("refuses %s", async (_name, extra) => {
      const token = await signTrusted(claims({ tenant_id: undefined, ...extra }));
      expect(await outcome(token, dotted)).toBe("ERR_TOKEN_TENANT");
    });
  });
});

describe("bearerFromRequest", () => {
  const url = "https://kb.test/mcp";
  const codeOf = (request: Request): string => {
    try {
      return `token:${bearerFromRequest(request)}`;
    } catch (error) {
      if (error instanceof KbError) return error.code;
      throw error;
    }
  };

  it("takes the token from the Authorization header", () => {
    expect(codeOf(new Request(url, { headers: { authorization: "Bearer abc.def.ghi" } }))).toBe("token:abc.def.ghi");
    expect(codeOf(new Request(url, { headers: { authorization: "bearer abc.def.ghi" } }))).toBe("token:abc.def.ghi");
  });

  it("refuses a token in the query string, even alongside a valid header", () => {
    expect(codeOf(new Request(`${url}?access_token=abc.def.ghi`))).toBe("ERR_TOKEN_IN_QUERY");
    expect(codeOf(new Request(`${url}?access_token=x`, { headers: { authorization: "Bearer abc.def.ghi" } }))).toBe(
      "ERR_TOKEN_IN_QUERY",
    );
    expect(codeOf(new Request(`${url}?foo=1&access_token=`))).toBe("ERR_TOKEN_IN_QUERY");
  });

  it("refuses other schemes and malformed bearer headers", () => {
    for (const authorization of ["Basic YWxpY2U6c2VjcmV0", "Token abc", "Bearer", "Bearer a b", "abc.def.ghi"]) {
      expect(codeOf(new Request(url, { headers: { authorization } }))).toBe("ERR_TOKEN_MALFORMED");
    }
  });

  it("reports a missing header as missing", () => {
    expect(codeOf(new Request(url))).toBe("ERR_TOKEN_MISSING");
  });
});
