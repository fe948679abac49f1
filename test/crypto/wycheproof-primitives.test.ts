import { afterAll, describe, expect, it } from "vitest";
import { aesGcmOpen, aesGcmSeal, importAes256GcmKey } from "../../src/crypto/chunked-gcm";
import { HKDF_SHA512_MAX_LENGTH, hkdfExpandSha512 } from "../../src/crypto/hkdf";
import aesGcmFile from "../vectors/wycheproof/aes_gcm_test.json";
import hkdfFile from "../vectors/wycheproof/hkdf_sha512_test.json";
import hmacFile from "../vectors/wycheproof/hmac_sha512_test.json";
import { concat, equalBytes, expectDecryptError, fromHex, hex, rejection } from "./helpers";

/*
 * Project Wycheproof vectors (test/vectors/wycheproof/NOTICE.md) for the primitives under Cobblestone-256:
 * HKDF-SHA-512 (our Expand after a WebCrypto HMAC Extract), HMAC-SHA-512 (WebCrypto, which our Expand is built
 * on) and AES-GCM (our 256-bit / 96-bit-nonce / 128-bit-tag helper).
 */

type Result = "valid" | "invalid" | "acceptable";

interface HkdfVector {
  readonly tcId: number;
  readonly flags: readonly string[];
  readonly ikm: string;
  readonly salt: string;
  readonly info: string;
  readonly size: number;
  readonly okm: string;
  readonly result: Result;
}
interface MacVector {
  readonly tcId: number;
  readonly flags: readonly string[];
  readonly key: string;
  readonly msg: string;
  readonly tag: string;
  readonly result: Result;
}
interface AeadVector {
  readonly tcId: number;
  readonly flags: readonly string[];
  readonly key: string;
  readonly iv: string;
  readonly aad: string;
  readonly msg: string;
  readonly ct: string;
  readonly tag: string;
  readonly result: Result;
}
interface Suite<G> {
  readonly algorithm: string;
  readonly numberOfTests: number;
  readonly testGroups: readonly G[];
}

const hkdf = hkdfFile as unknown as Suite<{ keySize: number; tests: readonly HkdfVector[] }>;
const hmac = hmacFile as unknown as Suite<{ keySize: number; tagSize: number; tests: readonly MacVector[] }>;
const gcm = aesGcmFile as unknown as Suite<{
  keySize: number;
  ivSize: number;
  tagSize: number;
  tests: readonly AeadVector[];
}>;

const tally = new Map<string, number>();
function tick(label: string): void {
  tally.set(label, (tally.get(label) ?? 0) + 1);
}

afterAll(() => {
  const rows = [...tally.entries()].sort(([a], [b]) => a.localeCompare(b));
  console.log(`Wycheproof primitives:\n${rows.map(([label, n]) => `  ${label.padEnd(58)} ${n}`).join("\n")}`);
});

async function hmacSha512(key: Uint8Array, message: Uint8Array): Promise<Uint8Array> {
  const hmacKey = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-512" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", hmacKey, message));
}

describe(`Wycheproof ${hkdf.algorithm}: Expand after a WebCrypto HMAC Extract`, () => {
  const vectors = hkdf.testGroups.flatMap((group) => group.tests);

  it("runs every vector", async () => {
    expect(vectors.length).toBe(hkdf.numberOfTests);
    for (const vector of vectors) {
      // Extract (RFC 5869 2.2): PRK = HMAC-SHA-512(salt, IKM); an empty salt means 64 zero bytes.
      const salt = vector.salt === "" ? new Uint8Array(64) : fromHex(vector.salt);
      const prk = await hmacSha512(salt, fromHex(vector.ikm));
      const info = fromHex(vector.info);
      if (vector.result === "valid") {
        const okm = await hkdfExpandSha512(prk, info, vector.size);
        expect(hex(okm), `tcId ${vector.tcId}`).toBe(vector.okm);
        // Cross-check with WebCrypto's own HKDF (Extract + Expand).
        const base = await crypto.subtle.importKey("raw", fromHex(vector.ikm), "HKDF", false, ["deriveBits"]);
        const bits = await crypto.subtle.deriveBits(
          { name: "HKDF", hash: "SHA-512", salt: fromHex(vector.salt), info },
          base,
          vector.size * 8,
        );
        expect(hex(new Uint8Array(bits)), `tcId ${vector.tcId} (WebCrypto HKDF)`).toBe(vector.okm);
        tick(`HKDF-SHA-512 valid ${vector.flags.join("+")}`);
      } else {
        expect(vector.size).toBeGreaterThan(HKDF_SHA512_MAX_LENGTH);
        await expect(hkdfExpandSha512(prk, info, vector.size), `tcId ${vector.tcId}`).rejects.toThrow(RangeError);
        tick(`HKDF-SHA-512 invalid ${vector.flags.join("+")} (rejected)`);
      }
    }
  });

  it("rejects bad arguments", async () => {
    const prk = new Uint8Array(32).fill(7);
    for (const length of [-1, 1.5, Number.NaN, HKDF_SHA512_MAX_LENGTH + 1]) {
      await expect(hkdfExpandSha512(prk, new Uint8Array(0), length)).rejects.toThrow(RangeError);
    }
    await expect(hkdfExpandSha512(new Uint8Array(0), new Uint8Array(0), 32)).rejects.toThrow(RangeError);
    expect((await hkdfExpandSha512(prk, new Uint8Array(0), 0)).byteLength).toBe(0);
    // Prefix property: a shorter output is a prefix of a longer one.
    const long = await hkdfExpandSha512(prk, new Uint8Array([1, 2, 3]), 200);
    const short = await hkdfExpandSha512(prk, new Uint8Array([1, 2, 3]), 65);
    expect(equalBytes(short, long.subarray(0, 65))).toBe(true);
  });
});

describe(`Wycheproof ${hmac.algorithm} through WebCrypto HMAC`, () => {
  it("runs every vector", async () => {
    let total = 0;
    for (const group of hmac.testGroups) {
      for (const vector of group.tests) {
        total++;
        const key = fromHex(vector.key);
        const message = fromHex(vector.msg);
        const tag = fromHex(vector.tag);
        expect(tag.byteLength * 8).toBe(group.tagSize);
        const computed = await hmacSha512(key, message);
        const matches = equalBytes(computed.subarray(0, tag.byteLength), tag);
        expect(matches, `tcId ${vector.tcId}`).toBe(vector.result === "valid");
        if (group.tagSize === 512) {
          const verifyKey = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-512" }, false, [
            "verify",
          ]);
          expect(await crypto.subtle.verify("HMAC", verifyKey, tag, message), `tcId ${vector.tcId}`).toBe(
            vector.result === "valid",
          );
        }
        tick(`HMAC-SHA-512 key ${group.keySize} tag ${group.tagSize} ${vector.result}`);
      }
    }
    expect(total).toBe(hmac.numberOfTests);
  });
});

describe(`Wycheproof ${gcm.algorithm}`, () => {
  it("runs the 256-bit key, 96-bit IV, 128-bit tag vectors through the Cobblestone AEAD helper", async () => {
    let ran = 0;
    for (const group of gcm.testGroups) {
      if (group.keySize !== 256 || group.ivSize !== 96 || group.tagSize !== 128) continue;
      for (const vector of group.tests) {
        ran++;
        const rawKey = fromHex(vector.key);
        const iv = fromHex(vector.iv);
        const aad = fromHex(vector.aad);
        const sealed = concat(fromHex(vector.ct), fromHex(vector.tag));
        const message = fromHex(vector.msg);
        const label = `tcId ${vector.tcId}`;
        if (aad.byteLength === 0) {
          // The helper has no AAD parameter (Cobblestone's AAD is always empty).
          const key = await importAes256GcmKey(rawKey);
          if (vector.result === "valid") {
            expect(hex(await aesGcmOpen(key, iv, sealed)), label).toBe(vector.msg);
            expect(hex(await aesGcmSeal(key, iv, message)), label).toBe(hex(sealed));
          } else {
            expectDecryptError(await rejection(aesGcmOpen(key, iv, sealed)));
          }
          tick(`AES-GCM 256/96/128 ${vector.result} via helper`);
        } else {
          const key = await crypto.subtle.importKey("raw", rawKey, "AES-GCM", false, ["decrypt"]);
          const params = { name: "AES-GCM", iv, additionalData: aad, tagLength: 128 };
          const opened = await crypto.subtle.decrypt(params, key, sealed).then(
            (plain) => hex(new Uint8Array(plain)),
            () => "failed",
          );
          expect(opened, label).toBe(vector.result === "valid" ? vector.msg : "failed");
          tick(`AES-GCM 256/96/128 ${vector.result} with AAD via WebCrypto`);
        }
      }
    }
    expect(ran).toBe(66);
  });

  it("rejects every other key size and IV size in the helper", async () => {
    for (const group of gcm.testGroups) {
      if (group.keySize === 256 && group.ivSize === 96) continue;
      for (const vector of group.tests) {
        const rawKey = fromHex(vector.key);
        const iv = fromHex(vector.iv);
        const sealed = concat(fromHex(vector.ct), fromHex(vector.tag));
        if (group.keySize !== 256) {
          expect(() => importAes256GcmKey(rawKey)).toThrow(RangeError);
          tick(`AES-GCM key ${group.keySize} rejected (key size)`);
          continue;
        }
        const key = await importAes256GcmKey(rawKey);
        await expect(aesGcmOpen(key, iv, sealed)).rejects.toThrow(RangeError);
        await expect(aesGcmSeal(key, iv, fromHex(vector.msg))).rejects.toThrow(RangeError);
        tick(`AES-GCM 256 IV ${group.ivSize} rejected (IV size)`);
      }
    }
  });

  it("fails closed on a sealed input shorter than the tag", async () => {
    const key = await importAes256GcmKey(new Uint8Array(32));
    expectDecryptError(await rejection(aesGcmOpen(key, new Uint8Array(12), new Uint8Array(15))));
  });
});
