import { env } from "cloudflare:workers";
import {
  base64url,
  CompactSign,
  compactVerify,
  createLocalJWKSet,
  decodeProtectedHeader,
  errors,
  importJWK,
  type JSONWebKeySet,
  type JWK,
  type JWTVerifyGetKey,
} from "jose";
import { describe, expect, it } from "vitest";
import { hasRocaFingerprint, keyResolver } from "../../src/auth/keys";
import { verifyAccessToken, verifyJwsSignature } from "../../src/auth/verify-token";
import { ASYMMETRIC_ALGORITHMS, type Config, loadConfig } from "../../src/config";
import { type ErrorCode, KbError } from "../../src/errors";
import jwkFile from "../vectors/wycheproof/json_web_key_test.json";
import jwsFile from "../vectors/wycheproof/json_web_signature_test.json";

/*
 * Project Wycheproof JWS/JWK vectors (test/vectors/wycheproof/NOTICE.md) against the verifier's JWS layer.
 *
 * The vectors are generic JWS (payloads like "foo"), so they go through verifyJwsSignature: the same header policy
 * (checkJwsPolicy) and jose compact verification that verifyAccessToken uses. Each vector is also run through
 * verifyAccessToken, which must agree: the same refusal code, or - when the signature is good - a refusal at the
 * claims stage only (a Wycheproof payload is not a JWT claim set).
 *
 * The verifier is deliberately stricter than the vectors: symmetric algorithms, JSON serialization and empty
 * payloads are refused by policy, and a JWK's `alg` pins the algorithm it may verify. `valid` vectors refused for
 * one of those reasons are counted separately, and a control shows that plain jose without the policy accepts
 * them, i.e. that the refusal really is the policy's.
 */

type Result = "valid" | "invalid" | "acceptable";

interface Vector {
  readonly tcId: number;
  readonly comment: string;
  readonly jws: string;
  readonly result: Result;
  readonly flags?: readonly string[];
}

interface Group {
  readonly comment: string;
  readonly public?: JWK | JSONWebKeySet;
  readonly private?: JWK | JSONWebKeySet;
  readonly tests: readonly Vector[];
}

interface VectorFile {
  readonly numberOfTests: number;
  readonly testGroups: readonly Group[];
}

const FILES = {
  json_web_signature_test: jwsFile as unknown as VectorFile,
  json_web_key_test: jwkFile as unknown as VectorFile,
} as const;

/** The widest allow-list loadConfig accepts, so that as many vectors as possible reach the signature check. */
const ALGORITHMS: readonly string[] = ASYMMETRIC_ALGORITHMS;
const SYMMETRIC = /^HS\d+$/;

const baseConfig = loadConfig({ ...env, AUTH_ALGORITHMS: ALGORITHMS.join(",") });

type Outcome = ErrorCode | "ok";

/** Why a `valid` vector is refused: the policy, stricter than Wycheproof. */
type PolicyReason =
  | "json-serialization"
  | "non-base64url-character"
  | "empty-payload"
  | "symmetric-alg"
  | "jwk-alg-mismatch";

interface Case {
  readonly file: keyof typeof FILES;
  readonly group: Group;
  readonly groupIndex: number;
  readonly vector: Vector;
}

const cases: Case[] = Object.entries(FILES).flatMap(([file, data]) =>
  data.testGroups.flatMap((group, groupIndex) =>
    group.tests.map((vector) => ({ file: file as keyof typeof FILES, group, groupIndex, vector })),
  ),
);

function keySet(group: Group): JSONWebKeySet | null {
  // Groups without a public key are symmetric: the verifier is handed the secret itself, the setting most
  // favourable to acceptance, to show that the policy - not a missing key - is what refuses them.
  const material = group.public ?? group.private;
  if (!material) return null;
  return "keys" in material ? material : { keys: [material as JWK] };
}

/**
 * The project's own resolver when loadConfig accepts the group's key set as AUTH_JWKS; a plain local set when it
 * refuses it (private or symmetric members), so the vector still meets the JWS layer.
 */
function resolverFor(group: Group): { keys: JWTVerifyGetKey; config: Config; configRefused: boolean } {
  const set = keySet(group);
  if (!set) throw new Error(`group "${group.comment}" has no key material`);
  try {
    const config = loadConfig({ ...env, AUTH_JWKS: JSON.stringify(set), AUTH_ALGORITHMS: ALGORITHMS.join(",") });
    return { keys: keyResolver(config), config, configRefused: false };
  } catch (error) {
    if (!(error instanceof KbError) || error.code !== "ERR_CONFIG") throw error;
    return { keys: createLocalJWKSet(set), config: baseConfig, configRefused: true };
  }
}

function headerOf(jws: string): Record<string, unknown> | null {
  try {
    return decodeProtectedHeader(jws) as Record<string, unknown>;
  } catch {
    return null;
  }
}

/** Mirrors the order of the verifier's checks, so the expected refusal code is the one the policy gives first. */
function policyReason(group: Group, vector: Vector): PolicyReason | null {
  const jws = vector.jws;
  if (jws.trimStart().startsWith("{") || vector.flags?.includes("JsonSerialization")) return "json-serialization";
  if (!/^[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$/.test(jws)) return "non-base64url-character";
  if (jws.split(".")[1] === "") return "empty-payload";
  const header = headerOf(jws);
  const alg = typeof header?.alg === "string" ? header.alg : "";
  if (SYMMETRIC.test(alg)) return "symmetric-alg";
  const set = keySet(group);
  const pinned = set?.keys.filter((key) => key.kid === header?.kid).map((key) => key.alg);
  if (pinned?.length && pinned.every((keyAlg) => keyAlg !== undefined && keyAlg !== alg)) return "jwk-alg-mismatch";
  return null;
}

async function outcomeOf<T>(run: () => Promise<T>): Promise<{ outcome: Outcome; value?: T; error?: KbError }> {
  try {
    return { outcome: "ok", value: await run() };
  } catch (error) {
    if (error instanceof KbError) return { outcome: error.code, error };
    throw error;
  }
}

/** Plain jose with the group's key imported directly for the header's algorithm: no policy, no key-set rules. */
async function plainJoseAccepts(group: Group, vector: Vector): Promise<boolean> {
  const header = headerOf(vector.jws);
  const set = keySet(group);
  const jwk = set?.keys.find((key) => key.kid === header?.kid) ?? set?.keys[0];
  // An unreadable header (e.g. a stray character in it) leaves the key's own algorithm to try.
  const alg = typeof header?.alg === "string" ? header.alg : (jwk?.alg ?? "");
  if (!jwk || !alg) return false;
  try {
    const { alg: _pinned, use: _use, key_ops: _ops, ...material } = jwk;
    const key = await importJWK(material, alg);
    await compactVerify(vector.jws, key, { algorithms: [alg] });
    return true;
  } catch {
    return false;
  }
}

interface Record_ {
  readonly file: string;
  readonly tcId: number;
  readonly result: Result;
  readonly flags: readonly string[];
  readonly outcome: Outcome;
  readonly policy: PolicyReason | null;
  readonly configRefused: boolean;
}

const records: Record_[] = [];

describe.each(Object.keys(FILES))("Wycheproof %s", (file) => {
  it.each(
    cases
      .filter((c) => c.file === file)
      .map((c) => ({ ...c, title: `tcId ${c.vector.tcId} ${c.vector.comment} [${c.vector.result}]` })),
  )("$title", async ({ group, vector }) => {
    const { keys, config, configRefused } = resolverFor(group);
    const policy = policyReason(group, vector);

    const jws = await outcomeOf(() => verifyJwsSignature(vector.jws, ALGORITHMS, keys));
    records.push({
      file,
      tcId: vector.tcId,
      result: vector.result,
      flags: vector.flags ?? [],
      outcome: jws.outcome,
      policy: vector.result === "valid" && jws.outcome !== "ok" ? policy : null,
      configRefused,
    });

    if (vector.result === "invalid") {
      expect(jws.outcome, "an invalid vector must be refused").not.toBe("ok");
    } else if (vector.result === "valid") {
      if (policy === null) {
        expect(jws.outcome, "a valid vector within the policy must verify").toBe("ok");
        expect(jws.value?.payload).toEqual(base64url.decode(vector.jws.split(".")[1] ?? ""));
      } else {
        const expected: Record<PolicyReason, ErrorCode> = {
          "symmetric-alg": "ERR_TOKEN_ALG",
          "json-serialization": "ERR_TOKEN_MALFORMED",
          "non-base64url-character": "ERR_TOKEN_MALFORMED",
          "empty-payload": "ERR_TOKEN_MALFORMED",
          "jwk-alg-mismatch": "ERR_TOKEN_KEY",
        };
        expect(jws.outcome, `refused by policy (${policy})`).toBe(expected[policy]);
      }
    }

    // verifyAccessToken must agree with the JWS layer.
    const access = await outcomeOf(() => verifyAccessToken(vector.jws, config, keys));
    expect(access.outcome).not.toBe("ok");
    if (jws.outcome === "ok") {
      // The signature is good, so the refusal must come from the claims (a Wycheproof payload is no claim set).
      const cause = access.error?.cause;
      expect(
        cause instanceof errors.JWTInvalid || cause instanceof errors.JWTClaimValidationFailed,
        `claims-stage refusal, got ${access.outcome}`,
      ).toBe(true);
    } else {
      expect(access.outcome).toBe(jws.outcome);
    }
  });
});

describe("the policy, not the vectors, refuses these valid JWS", () => {
  it("plain jose without the policy accepts the policy-refused valid vectors (where jose itself can)", async () => {
    const refused = cases.filter((c) => c.vector.result === "valid" && policyReason(c.group, c.vector) !== null);
    expect(refused.length).toBeGreaterThan(0);
    const notAcceptedByJose: number[] = [];
    for (const { group, vector } of refused) {
      if (!(await plainJoseAccepts(group, vector))) notAcceptedByJose.push(vector.tcId);
    }
    // 372 and 373 insert a '?' into the base64url header and payload. The MAC covers the text as sent, so Wycheproof
    // lists them as valid for decoders that skip stray characters; jose decodes strictly and refuses them too.
    expect(notAcceptedByJose).toEqual([372, 373]);
  });
});

describe("key sets (json_web_key_test and derived cases)", () => {
  const ecGroup = (FILES.json_web_signature_test.testGroups[1] as Group) ?? null;
  const ecPublic = ecGroup?.public as JWK;
  const ecPrivate = ecGroup?.private as JWK;
  const validEs256 = ecGroup?.tests.find((vector) => vector.tcId === 18)?.jws ?? "";
  const otherEcPublic = (({ d: _d, ...pub }) => pub)(JSON.parse(env.TEST_ATTACKER_JWK) as JWK);

  it("fixtures: group 1 is the ES256 group and tcId 18 verifies with its key", async () => {
    expect(ecGroup?.comment).toBe("es256");
    expect(ecPublic.kid).toBe("kid-ec-sign");
    const keys = createLocalJWKSet({ keys: [ecPublic] });
    await expect(verifyJwsSignature(validEs256, ALGORITHMS, keys)).resolves.toMatchObject({
      payload: new TextEncoder().encode("foo"),
    });
  });

  it("loadConfig refuses key sets with private or symmetric members (the Wycheproof mixed set, a private EC key)", () => {
    const mixed = FILES.json_web_key_test.testGroups[0]?.private as JSONWebKeySet;
    for (const set of [mixed, { keys: [ecPrivate] }, { keys: [ecPublic, ecPrivate] }]) {
      let code: string | null = null;
      try {
        loadConfig({ ...env, AUTH_JWKS: JSON.stringify(set) });
      } catch (error) {
        code = error instanceof KbError ? error.code : "not a KbError";
      }
      expect(code).toBe("ERR_CONFIG");
    }
  });

  it("a private key that reached the resolver anyway is not used (ERR_TOKEN_KEY)", async () => {
    const keys = createLocalJWKSet({ keys: [ecPrivate] });
    await expect(verifyJwsSignature(validEs256, ALGORITHMS, keys)).rejects.toMatchObject({ code: "ERR_TOKEN_KEY" });
  });

  it("duplicate kids never verify ambiguously, through the project's resolver too", async () => {
    const impostor = { ...otherEcPublic, kid: ecPublic.kid };
    for (const set of [
      { keys: [ecPublic, impostor] },
      { keys: [impostor, ecPublic] },
      { keys: [ecPublic, ecPublic] },
    ]) {
      await expect(verifyJwsSignature(validEs256, ALGORITHMS, createLocalJWKSet(set))).rejects.toMatchObject({
        code: "ERR_TOKEN_KEY",
      });
      // The project's configuration refuses such a set outright (fail closed at start, not per token).
      expect(() => loadConfig({ ...env, AUTH_JWKS: JSON.stringify(set) })).toThrow(
        expect.objectContaining({ code: "ERR_CONFIG" }),
      );
    }
  });

  it("a token without kid facing two candidate keys is refused, not tried against each", async () => {
    const token = await new CompactSign(new TextEncoder().encode("foo"))
      .setProtectedHeader({ alg: "ES256" })
      .sign(await importJWK(ecPrivate, "ES256"));
    const single = createLocalJWKSet({ keys: [ecPublic] });
    await expect(verifyJwsSignature(token, ALGORITHMS, single)).resolves.toBeTruthy();
    const two = createLocalJWKSet({ keys: [ecPublic, { ...otherEcPublic, kid: "other" }] });
    await expect(verifyJwsSignature(token, ALGORITHMS, two)).rejects.toMatchObject({ code: "ERR_TOKEN_KEY" });
  });

  it("the embedded-jwk vector (tcId 32) verifies with the key it embeds, and is still refused", async () => {
    const vector = ecGroup?.tests.find((v) => v.tcId === 32);
    if (!vector) throw new Error("tcId 32 missing");
    const embedded = decodeProtectedHeader(vector.jws).jwk as JWK;
    await expect(compactVerify(vector.jws, await importJWK(embedded, "ES256"))).resolves.toBeTruthy();
    await expect(
      verifyJwsSignature(vector.jws, ALGORITHMS, createLocalJWKSet({ keys: [ecPublic] })),
    ).rejects.toMatchObject({ code: "ERR_TOKEN_SIGNATURE" });
  });
});

describe("ROCA screening of configured RSA keys", () => {
  const rsaModuli = cases
    .flatMap(({ group }) => keySet(group)?.keys ?? [])
    .filter((key) => key.kty === "RSA" && typeof key.n === "string");

  it("detects the Wycheproof ROCA key and no other Wycheproof or test RSA key", () => {
    const flagged = new Set(
      rsaModuli.filter((key) => hasRocaFingerprint(base64url.decode(key.n ?? ""))).map((key) => key.kid),
    );
    expect([...flagged]).toEqual(["kid-rsa-roca-sign"]);
    const trusted = (JSON.parse(env.AUTH_JWKS ?? "{}") as { keys: JWK[] }).keys.filter((key) => key.kty === "RSA");
    expect(trusted.length).toBeGreaterThan(0);
    for (const key of trusted) expect(hasRocaFingerprint(base64url.decode(key.n ?? ""))).toBe(false);
  });

  it("the ROCA vector is signed correctly: plain jose accepts it, the verifier refuses the key", async () => {
    const group = FILES.json_web_key_test.testGroups.find((g) => g.tests.some((v) => v.tcId === 7));
    const vector = group?.tests.find((v) => v.tcId === 7);
    if (!group || !vector) throw new Error("tcId 7 missing");
    expect(await plainJoseAccepts(group, vector)).toBe(true);
    const { keys } = resolverFor(group);
    await expect(verifyJwsSignature(vector.jws, ALGORITHMS, keys)).rejects.toMatchObject({ code: "ERR_TOKEN_KEY" });
  });
});

describe("summary", () => {
  it("every vector ran; counts per file, result and flag", () => {
    const total = Object.values(FILES).reduce((sum, data) => sum + data.numberOfTests, 0);
    expect(cases).toHaveLength(total);
    expect(records).toHaveLength(total);

    const count = (predicate: (r: Record_) => boolean) => records.filter(predicate).length;
    const byFlag: Record<string, { ran: number; refused: number }> = {};
    for (const record of records) {
      for (const flag of record.flags.length ? record.flags : ["(none)"]) {
        const entry = byFlag[flag] ?? { ran: 0, refused: 0 };
        entry.ran++;
        if (record.outcome !== "ok") entry.refused++;
        byFlag[flag] = entry;
      }
    }
    const policy: Record<string, number[]> = {};
    for (const record of records) {
      if (record.policy) policy[record.policy] = [...(policy[record.policy] ?? []), record.tcId];
    }
    const outcomes: Record<string, number> = {};
    for (const record of records) outcomes[record.outcome] = (outcomes[record.outcome] ?? 0) + 1;

    const summary = {
      ran: records.length,
      perFile: Object.fromEntries(Object.keys(FILES).map((file) => [file, count((r) => r.file === file)])),
      invalid: {
        ran: count((r) => r.result === "invalid"),
        refused: count((r) => r.result === "invalid" && r.outcome !== "ok"),
      },
      valid: {
        ran: count((r) => r.result === "valid"),
        verified: count((r) => r.result === "valid" && r.outcome === "ok"),
        refusedByPolicy: count((r) => r.result === "valid" && r.policy !== null),
        verifiedTcIds: records
          .filter((r) => r.result === "valid" && r.outcome === "ok")
          .map((r) => `${r.file}#${r.tcId}`),
      },
      acceptable: count((r) => r.result === "acceptable"),
      refusedByPolicyTcIds: policy,
      keySetRefusedByLoadConfig: count((r) => r.configRefused),
      byFlag,
      outcomes,
    };
    console.log(`Wycheproof JWS/JWK summary: ${JSON.stringify(summary, null, 2)}`);

    // Every valid vector is either verified or refused for a named policy reason: nothing unexplained.
    expect(summary.valid.verified + summary.valid.refusedByPolicy).toBe(summary.valid.ran);
    expect(summary.invalid.refused).toBe(summary.invalid.ran);
    expect(summary.valid.verified).toBeGreaterThan(0);
  });
});
