import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import {
  CHUNK_SIZE,
  decrypt,
  decryptingStream,
  ENCRYPTED_CHUNK_SIZE,
  HEADER_SIZE,
  openRandomAccess,
  type RandomAccessDecryptor,
} from "../../src/crypto/chunked-aead";
import { chunkNonce } from "../../src/crypto/chunked-format";
import { deriveKeyMaterial } from "../../src/crypto/chunked-keys";
import vectorFile from "../vectors/wycheproof/c2sp_chunked_encryption_aes_256_gcm_test.json";
import {
  equalBytes,
  expectDecryptError,
  fromHex,
  hex,
  inflate,
  pseudoRandomBytes,
  rejection,
  runStream,
  sha512Hex,
} from "./helpers";

/*
 * Project Wycheproof Cobblestone-256 vectors (test/vectors/wycheproof/NOTICE.md), each run through whole-object
 * decrypt, the decrypting stream (several piece sizes) and random access.
 */

interface ChunkedVector {
  readonly tcId: number;
  readonly comment: string;
  readonly key: string;
  readonly ctx: string;
  /** zlib-compressed ciphertext, hex. */
  readonly ct: string;
  readonly aeadKey?: string;
  readonly baseNonce?: string;
  readonly msgLength?: number;
  readonly msgSha512?: string;
  readonly result: "valid" | "invalid" | "acceptable";
  readonly flags: readonly string[];
}

interface VectorFile {
  readonly algorithm: string;
  readonly numberOfTests: number;
  readonly testGroups: readonly {
    readonly type: string;
    readonly aead: string;
    readonly sha: string;
    readonly tests: readonly ChunkedVector[];
  }[];
}

const file = vectorFile as unknown as VectorFile;
const vectors = file.testGroups.flatMap((group) => group.tests);

/** Flags whose vectors must be rejected while processing the header, before any AEAD call. */
const HEADER_FLAGS = ["HeaderFailure", "WrongKey", "WrongContext", "InvalidKeySize"];

type Counter = {
  vectors: number;
  whole: number;
  stream: number;
  /** Stream runs that released a non-empty authenticated prefix before failing. */
  prefixReleased: number;
  randomAccess: number;
  finalChunk: number;
};
const counts = new Map<string, Counter>();
function count(vector: ChunkedVector, field: keyof Counter): void {
  for (const flag of vector.flags.length > 0 ? vector.flags : [`(${vector.result}, no flag)`]) {
    const entry = counts.get(flag) ?? {
      vectors: 0,
      whole: 0,
      stream: 0,
      prefixReleased: 0,
      randomAccess: 0,
      finalChunk: 0,
    };
    entry[field]++;
    counts.set(flag, entry);
  }
}

function pieceSizes(length: number): number[] {
  const whole = Math.max(1, length);
  return length <= 64 * 1024
    ? [1, 7, ENCRYPTED_CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE + 1, whole]
    : [4093, 16400, 65536, whole];
}

function hashMatches(actual: string, expected: string | undefined): boolean {
  if (!expected) return false;
  return actual.slice(0, expected.length) === expected.toLowerCase();
}

/** Reference decryption of chunk k straight from the vector's aeadKey/baseNonce, independent of the module. */
async function referenceChunk(vector: ChunkedVector, ciphertext: Uint8Array, index: number): Promise<Uint8Array> {
  if (!vector.aeadKey || !vector.baseNonce) throw new Error("vector without aeadKey/baseNonce");
  const key = await crypto.subtle.importKey("raw", fromHex(vector.aeadKey), "AES-GCM", false, ["decrypt"]);
  const start = HEADER_SIZE + index * ENCRYPTED_CHUNK_SIZE;
  const sealed = ciphertext.subarray(start, start + ENCRYPTED_CHUNK_SIZE);
  const iv = chunkNonce(fromHex(vector.baseNonce), index);
  return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv }, key, sealed));
}

/** Counts AEAD decryptions, to show that header failures happen before any chunk is opened. */
function countDecryptCalls(): { calls: () => number } {
  const spy = vi.spyOn(crypto.subtle, "decrypt");
  return { calls: () => spy.mock.calls.length };
}

afterEach(() => {
  vi.restoreAllMocks();
});

afterAll(() => {
  const rows = [...counts.entries()].sort(([a], [b]) => a.localeCompare(b));
  console.log(
    `Wycheproof ${file.algorithm}: ${vectors.length} vectors\n` +
      rows
        .map(
          ([flag, c]) =>
            `  ${flag.padEnd(22)} vectors=${c.vectors} whole=${c.whole} stream=${c.stream} ` +
            `prefixReleased=${c.prefixReleased} ` +
            `randomAccess=${c.randomAccess} finalChunk=${c.finalChunk}`,
        )
        .join("\n"),
  );
});

describe(`Wycheproof ${file.algorithm} (c2sp.org/chunked-encryption)`, () => {
  it("has the expected file shape", () => {
    expect(file.algorithm).toBe("Cobblestone-256");
    expect(vectors.length).toBe(file.numberOfTests);
    for (const group of file.testGroups) {
      expect(group.type).toBe("ChunkedEncryption");
      expect(group.aead).toBe("AEAD_AES_256_GCM");
      expect(group.sha).toBe("SHA-512");
    }
  });

  for (const vector of vectors) {
    it(`tcId ${vector.tcId}: ${vector.comment} [${vector.result}${vector.flags.map((f) => ` ${f}`).join("")}]`, async () => {
      const key = fromHex(vector.key);
      const context = fromHex(vector.ctx);
      const ciphertext = await inflate(fromHex(vector.ct));
      const valid = vector.result === "valid";
      const headerFailure = vector.flags.some((flag) => HEADER_FLAGS.includes(flag));
      const partial = vector.flags.includes("PartialPlaintext");
      expect(vector.result === "acceptable").toBe(false);
      count(vector, "vectors");

      // Key schedule known answer: the vector's AEAD key and base nonce come from (key, salt, context).
      if (vector.aeadKey && vector.baseNonce) {
        const material = await deriveKeyMaterial(key, ciphertext.subarray(0, 24), context);
        expect(hex(material.key)).toBe(vector.aeadKey);
        expect(hex(material.baseNonce)).toBe(vector.baseNonce);
        expect(hex(material.commitment)).toBe(hex(ciphertext.subarray(24, HEADER_SIZE)));
      }

      // 1. Whole-object decryption.
      const probe = countDecryptCalls();
      let plaintext: Uint8Array | undefined;
      if (valid) {
        plaintext = await decrypt(key, context, ciphertext);
        expect(probe.calls()).toBeGreaterThan(0); // The probe does see AEAD calls.
        expect(plaintext.byteLength).toBe(vector.msgLength);
        expect(hashMatches(await sha512Hex(plaintext), vector.msgSha512)).toBe(true);
      } else {
        expectDecryptError(await rejection(decrypt(key, context, ciphertext)));
        if (headerFailure) expect(probe.calls()).toBe(0);
      }
      count(vector, "whole");

      // 2. Streaming decryption, fed in several piece sizes.
      for (const size of pieceSizes(ciphertext.byteLength)) {
        const before = probe.calls();
        const run = await runStream(decryptingStream(key, context), ciphertext, size);
        if (valid) {
          expect(run.error).toBeUndefined();
          expect(plaintext && equalBytes(run.released, plaintext)).toBe(true);
        } else {
          expectDecryptError(run.error);
          expect(run.keepsFailing).toBe(true);
          if (headerFailure) {
            expect(run.released.byteLength).toBe(0);
            expect(probe.calls()).toBe(before);
          } else if (partial) {
            // Only whole authenticated chunks, never more than the valid prefix the vector describes.
            expect(run.released.byteLength % CHUNK_SIZE).toBe(0);
            expect(run.released.byteLength).toBeLessThanOrEqual(vector.msgLength ?? 0);
            for (let k = 0; k * CHUNK_SIZE < run.released.byteLength; k++) {
              const chunk = run.released.subarray(k * CHUNK_SIZE, (k + 1) * CHUNK_SIZE);
              expect(equalBytes(chunk, await referenceChunk(vector, ciphertext, k))).toBe(true);
            }
            if (run.released.byteLength > 0) count(vector, "prefixReleased");
            if (run.released.byteLength === vector.msgLength) {
              expect(hashMatches(await sha512Hex(run.released), vector.msgSha512)).toBe(true);
            }
          } else {
            expect(run.released.byteLength).toBe(0);
          }
        }
        count(vector, "stream");
      }

      // 3. Random access.
      const header = ciphertext.subarray(0, HEADER_SIZE);
      let reader: RandomAccessDecryptor | undefined;
      const before = probe.calls();
      try {
        reader = await openRandomAccess(key, context, header, ciphertext.byteLength);
      } catch (error) {
        expectDecryptError(error);
        expect(valid).toBe(false);
        expect(probe.calls()).toBe(before);
      }
      if (headerFailure) expect(reader).toBeUndefined();
      if (reader) {
        const final = reader.finalChunkSpan();
        const finalBytes = ciphertext.subarray(final.ciphertextStart, final.ciphertextEnd);
        if (valid && plaintext) {
          expect(reader.plaintextLength).toBe(plaintext.byteLength);
          const tail = await reader.authenticateFinalChunk(finalBytes);
          expect(equalBytes(tail, plaintext.subarray(final.plaintextStart))).toBe(true);
          await checkRanges(reader, ciphertext, plaintext, vector.tcId);
        } else {
          const outcome = await reader.authenticateFinalChunk(finalBytes).then(
            () => "ok",
            (error: unknown) => {
              expectDecryptError(error);
              return "failed";
            },
          );
          // Only ValidFinalChunk vectors have a validly encrypted final chunk at the right index.
          expect(outcome).toBe(vector.flags.includes("ValidFinalChunk") ? "ok" : "failed");
          expectDecryptError(await rejection(reader.decryptChunks(0, ciphertext.subarray(HEADER_SIZE))));
        }
        count(vector, "finalChunk");
      }
      count(vector, "randomAccess");
    });
  }
});

/** Decrypts a spread of plaintext ranges and compares them with the whole plaintext. */
async function checkRanges(
  reader: RandomAccessDecryptor,
  ciphertext: Uint8Array,
  plaintext: Uint8Array,
  seed: number,
): Promise<void> {
  const length = plaintext.byteLength;
  if (length === 0) {
    expect(() => reader.chunkSpan(0, 0)).toThrow(RangeError);
    expect(() => reader.chunkSpan(0, 1)).toThrow(RangeError);
    return;
  }
  const ranges: [number, number][] = [
    [0, length],
    [0, 1],
    [length - 1, length],
    [Math.max(0, length - 100), length], // bytes=-100
  ];
  for (const boundary of [CHUNK_SIZE, 2 * CHUNK_SIZE, 256 * CHUNK_SIZE]) {
    if (boundary < length) ranges.push([boundary - 1, boundary + 1], [boundary, length], [0, boundary]);
  }
  const random = pseudoRandomBytes(64, seed);
  const view = new DataView(random.buffer);
  for (let i = 0; i < 8; i++) {
    const a = view.getUint32(8 * i) % length;
    const b = view.getUint32(8 * i + 4) % length;
    ranges.push([Math.min(a, b), Math.max(a, b) + 1]);
  }
  for (const [start, end] of ranges) {
    const span = reader.chunkSpan(start, end);
    expect(span.firstChunk).toBe(Math.floor(start / CHUNK_SIZE));
    if (end === length) expect(span.ciphertextEnd).toBe(ciphertext.byteLength);
    const bytes = ciphertext.subarray(span.ciphertextStart, span.ciphertextEnd);
    const plain = await reader.decryptChunks(span.firstChunk, bytes);
    const slice = plain.subarray(start - span.plaintextStart, end - span.plaintextStart);
    expect(equalBytes(slice, plaintext.subarray(start, end))).toBe(true);
  }
}
