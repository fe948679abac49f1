import { describe, expect, it } from "vitest";
import {
  CHUNK_SIZE,
  ciphertextLength,
  decrypt,
  ENCRYPTED_CHUNK_SIZE,
  encrypt,
  HEADER_SIZE,
  MAX_CHUNKS,
  MAX_PLAINTEXT_LENGTH,
  openRandomAccess,
  plaintextLength,
  type RandomAccessDecryptor,
  TAG_SIZE,
} from "../../src/crypto/chunked-aead";
import { chunkNonce } from "../../src/crypto/chunked-format";
import { MessageCipher } from "../../src/crypto/chunked-keys";
import type { KbError } from "../../src/errors";
import { equalBytes, expectDecryptError, fromHex, hex, pseudoRandomBytes, rejection } from "./helpers";

const KEY = pseudoRandomBytes(32, 1234);
const CONTEXT = new TextEncoder().encode("tenant-c/doc");

function decryptErrorOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  return new Error("expected a throw");
}

describe("lengths", () => {
  it("exports the Cobblestone-256 constants", () => {
    expect([CHUNK_SIZE, TAG_SIZE, HEADER_SIZE, ENCRYPTED_CHUNK_SIZE]).toEqual([16384, 16, 56, 16400]);
    expect(MAX_CHUNKS).toBe(2 ** 38);
    expect(MAX_PLAINTEXT_LENGTH).toBe(2 ** 52 - 1);
  });

  it("maps plaintext lengths to ciphertext lengths and back", () => {
    const table: [number, number][] = [
      [0, 72],
      [1, 73],
      [CHUNK_SIZE - 1, 56 + 16383 + 16],
      [CHUNK_SIZE, 56 + 16400 + 16],
      [CHUNK_SIZE + 1, 56 + 16400 + 17],
      [2 * CHUNK_SIZE, 56 + 2 * 16400 + 16],
      [MAX_PLAINTEXT_LENGTH, 56 + (MAX_CHUNKS - 1) * 16400 + 16399],
    ];
    for (const [plain, cipher] of table) {
      expect(ciphertextLength(plain)).toBe(cipher);
      expect(plaintextLength(cipher)).toBe(plain);
    }
    for (let p = 0; p < 3 * CHUNK_SIZE + 40; p += 97) expect(plaintextLength(ciphertextLength(p))).toBe(p);
  });

  it("rejects impossible lengths", () => {
    for (const bad of [-1, 0.5, Number.NaN, Number.POSITIVE_INFINITY, MAX_PLAINTEXT_LENGTH + 1]) {
      expect(() => ciphertextLength(bad)).toThrow(RangeError);
    }
    const impossible = [
      -1,
      0,
      55,
      56, // header only
      57,
      71, // header + 15 bytes: shorter than a tag
      1.5,
      Number.NaN,
      56 + ENCRYPTED_CHUNK_SIZE, // a full chunk without the short final chunk
      56 + 3 * ENCRYPTED_CHUNK_SIZE,
      56 + ENCRYPTED_CHUNK_SIZE + 1,
      56 + ENCRYPTED_CHUNK_SIZE + 15, // final remainder shorter than a tag
      56 + MAX_CHUNKS * ENCRYPTED_CHUNK_SIZE + 16, // 2^38 + 1 chunks
    ];
    for (const length of impossible) expectDecryptError(decryptErrorOf(() => plaintextLength(length)));
  });

  it("derives chunk nonces by XOR with the big-endian counter", () => {
    const base = fromHex("f206a92ac0ba380c8e9e3843");
    expect(hex(chunkNonce(base, 0))).toBe("f206a92ac0ba380c8e9e3843");
    expect(hex(chunkNonce(base, 1))).toBe("f206a92ac0ba380c8e9e3842");
    expect(hex(chunkNonce(base, 256))).toBe("f206a92ac0ba380c8e9e3943");
    expect(hex(chunkNonce(base, 2 ** 32))).toBe("f206a92ac0ba380d8e9e3843");
    expect(hex(chunkNonce(base, MAX_CHUNKS - 1))).toBe("f206a92ac0ba38337161c7bc"); // last 5 bytes XOR 3f ff ff ff ff
    expect(() => chunkNonce(base, MAX_CHUNKS)).toThrow(RangeError);
    expect(() => chunkNonce(base, -1)).toThrow(RangeError);
  });

  it("aborts at 2^38 chunks", async () => {
    const key = await crypto.subtle.importKey("raw", KEY, "AES-GCM", false, ["encrypt", "decrypt"]);
    const cipher = new MessageCipher(key, new Uint8Array(12));
    const lastFull = await cipher.seal(MAX_CHUNKS - 1, new Uint8Array(3), true);
    expect(equalBytes(await cipher.open(MAX_CHUNKS - 1, lastFull, true), new Uint8Array(3))).toBe(true);
    await expect(cipher.seal(MAX_CHUNKS, new Uint8Array(3), true)).rejects.toThrow(RangeError);
    expectDecryptError(await rejection(cipher.open(MAX_CHUNKS, lastFull, true)));
    // Sizes must match the position: full non-final chunks, strictly shorter final chunks.
    await expect(cipher.seal(0, new Uint8Array(CHUNK_SIZE), true)).rejects.toThrow(RangeError);
    await expect(cipher.seal(0, new Uint8Array(10), false)).rejects.toThrow(RangeError);
    expectDecryptError(await rejection(cipher.open(0, lastFull, false)));
  });
});

describe("whole-object encrypt/decrypt", () => {
  it("round-trips around the chunk boundaries", async () => {
    for (const length of [0, 1, 15, 16, 17, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 70_000]) {
      const plaintext = pseudoRandomBytes(length, length + 1);
      const ciphertext = await encrypt(KEY, CONTEXT, plaintext);
      expect(ciphertext.byteLength).toBe(ciphertextLength(length));
      expect(equalBytes(await decrypt(KEY, CONTEXT, ciphertext), plaintext)).toBe(true);
    }
  });

  it("is deterministic for a given salt and random otherwise", async () => {
    const salt = pseudoRandomBytes(24, 4);
    const plaintext = pseudoRandomBytes(100, 5);
    const a = await encrypt(KEY, CONTEXT, plaintext, salt);
    expect(equalBytes(a, await encrypt(KEY, CONTEXT, plaintext, salt))).toBe(true);
    expect(equalBytes(a.subarray(0, 24), salt)).toBe(true);
    const b = await encrypt(KEY, CONTEXT, plaintext);
    const c = await encrypt(KEY, CONTEXT, plaintext);
    expect(equalBytes(b.subarray(0, 24), c.subarray(0, 24))).toBe(false);
  });

  it("rejects bad arguments", async () => {
    for (const key of [new Uint8Array(0), new Uint8Array(16), new Uint8Array(31), new Uint8Array(33)]) {
      await expect(encrypt(key, CONTEXT, new Uint8Array(1))).rejects.toThrow(RangeError);
    }
    await expect(encrypt(KEY, CONTEXT, new Uint8Array(1), new Uint8Array(23))).rejects.toThrow(RangeError);
    await expect(encrypt(KEY, CONTEXT, new Uint8Array(1), new Uint8Array(25))).rejects.toThrow(RangeError);
    const ciphertext = await encrypt(KEY, CONTEXT, new Uint8Array(1));
    for (const key of [new Uint8Array(0), KEY.subarray(0, 16), KEY.subarray(0, 31), new Uint8Array(33)]) {
      expectDecryptError(await rejection(decrypt(key, CONTEXT, ciphertext)));
    }
  });

  it("uses one generic error for every decryption failure", async () => {
    const ciphertext = await encrypt(KEY, CONTEXT, pseudoRandomBytes(CHUNK_SIZE + 10, 6));
    const failures = [
      await rejection(decrypt(KEY, new Uint8Array(0), ciphertext)),
      await rejection(decrypt(KEY, CONTEXT, ciphertext.subarray(0, 60))),
      await rejection(decrypt(KEY, CONTEXT, ciphertext.subarray(0, HEADER_SIZE + ENCRYPTED_CHUNK_SIZE))),
    ];
    for (const error of failures) {
      expectDecryptError(error);
      expect((error as KbError).status).toBe(500);
      expect((error as KbError).cause).toBeUndefined();
    }
  });
});

/** Serves an HTTP Range the way the lead's R2 code will: the "storage" is a byte array sliced on demand. */
async function serveRange(
  stored: Uint8Array,
  range: { start?: number; end?: number; suffix?: number },
): Promise<{ status: number; body?: Uint8Array; contentRange?: string }> {
  const fetchRange = async (offset: number, length: number) => stored.slice(offset, offset + length);
  const header = await fetchRange(0, HEADER_SIZE);
  const reader: RandomAccessDecryptor = await openRandomAccess(KEY, CONTEXT, header, stored.byteLength);
  const size = reader.plaintextLength;
  let start: number;
  let end: number;
  if (range.suffix !== undefined) {
    start = Math.max(0, size - range.suffix);
    end = size;
  } else {
    start = range.start ?? 0;
    end = range.end === undefined ? size : Math.min(range.end + 1, size);
  }
  if (start >= size || start >= end) return { status: 416, contentRange: `bytes */${size}` };
  const span = reader.chunkSpan(start, end);
  const bytes = await fetchRange(span.ciphertextStart, span.ciphertextEnd - span.ciphertextStart);
  const plain = await reader.decryptChunks(span.firstChunk, bytes);
  return {
    status: 206,
    body: plain.subarray(start - span.plaintextStart, end - span.plaintextStart),
    contentRange: `bytes ${start}-${end - 1}/${size}`,
  };
}

describe("random access", () => {
  it("maps ranges to chunk spans", async () => {
    const length = 3 * CHUNK_SIZE + 1000;
    const ciphertext = await encrypt(KEY, CONTEXT, pseudoRandomBytes(length, 7));
    const reader = await openRandomAccess(KEY, CONTEXT, ciphertext.subarray(0, HEADER_SIZE), ciphertext.byteLength);
    expect(reader.plaintextLength).toBe(length);
    expect(reader.chunkCount).toBe(4);
    expect(reader.chunkSpan(0, 1)).toEqual({
      firstChunk: 0,
      lastChunk: 0,
      ciphertextStart: 56,
      ciphertextEnd: 56 + 16400,
      plaintextStart: 0,
    });
    expect(reader.chunkSpan(CHUNK_SIZE - 1, CHUNK_SIZE + 1)).toMatchObject({ firstChunk: 0, lastChunk: 1 });
    expect(reader.chunkSpan(CHUNK_SIZE, 2 * CHUNK_SIZE)).toMatchObject({ firstChunk: 1, lastChunk: 1 });
    expect(reader.chunkSpan(length - 1, length)).toEqual({
      firstChunk: 3,
      lastChunk: 3,
      ciphertextStart: 56 + 3 * 16400,
      ciphertextEnd: ciphertext.byteLength,
      plaintextStart: 3 * CHUNK_SIZE,
    });
    for (const [a, b] of [
      [0, 0],
      [5, 4],
      [-1, 3],
      [0, length + 1],
      [0.5, 3],
    ] as const) {
      expect(() => reader.chunkSpan(a, b)).toThrow(RangeError);
    }
  });

  it("includes the empty final chunk in a range that reaches the end", async () => {
    const length = 2 * CHUNK_SIZE;
    const plaintext = pseudoRandomBytes(length, 8);
    const ciphertext = await encrypt(KEY, CONTEXT, plaintext);
    const reader = await openRandomAccess(KEY, CONTEXT, ciphertext.subarray(0, HEADER_SIZE), ciphertext.byteLength);
    const span = reader.chunkSpan(length - 10, length);
    expect(span).toMatchObject({ firstChunk: 1, lastChunk: 2, ciphertextEnd: ciphertext.byteLength });
    const plain = await reader.decryptChunks(1, ciphertext.subarray(span.ciphertextStart, span.ciphertextEnd));
    expect(equalBytes(plain, plaintext.subarray(CHUNK_SIZE))).toBe(true);
    expect(reader.chunkSpan(0, length - 1)).toMatchObject({ lastChunk: 1 });
    const final = reader.finalChunkSpan();
    expect(final).toMatchObject({ firstChunk: 2, lastChunk: 2, ciphertextEnd: final.ciphertextStart + TAG_SIZE });
    expect((await reader.authenticateFinalChunk(ciphertext.subarray(final.ciphertextStart))).byteLength).toBe(0);
  });

  it("rejects slices that are not whole consecutive chunks", async () => {
    const ciphertext = await encrypt(KEY, CONTEXT, pseudoRandomBytes(3 * CHUNK_SIZE + 1000, 9));
    const reader = await openRandomAccess(KEY, CONTEXT, ciphertext.subarray(0, HEADER_SIZE), ciphertext.byteLength);
    const at = (k: number) => HEADER_SIZE + k * ENCRYPTED_CHUNK_SIZE;
    const bad: [number, Uint8Array][] = [
      [0, new Uint8Array(0)],
      [0, ciphertext.subarray(at(0), at(1) - 1)], // partial chunk
      [0, ciphertext.subarray(at(0), at(1) + 1)], // a byte of the next chunk
      [1, ciphertext.subarray(at(0), at(1))], // chunk 0 presented as chunk 1
      [3, ciphertext.subarray(at(3), ciphertext.byteLength - 1)], // final chunk cut short
      [2, ciphertext.subarray(at(2), ciphertext.byteLength - 1)],
      [3, ciphertext.subarray(at(2), at(3))], // a full chunk where the short final one belongs
    ];
    for (const [first, bytes] of bad) expectDecryptError(await rejection(reader.decryptChunks(first, bytes)));
    for (const first of [-1, 4, 1.5]) {
      await expect(reader.decryptChunks(first, ciphertext.subarray(at(0), at(1)))).rejects.toThrow(RangeError);
    }
    // The final chunk must have exactly the length the total implies.
    expectDecryptError(await rejection(reader.authenticateFinalChunk(ciphertext.subarray(at(3), -1))));
    expectDecryptError(await rejection(reader.authenticateFinalChunk(ciphertext.subarray(at(2), at(3)))));
    // Header checks.
    const header = ciphertext.subarray(0, HEADER_SIZE);
    expectDecryptError(await rejection(openRandomAccess(KEY, CONTEXT, ciphertext.subarray(0, 55), ciphertext.length)));
    expectDecryptError(await rejection(openRandomAccess(KEY, CONTEXT, ciphertext.subarray(0, 57), ciphertext.length)));
    expectDecryptError(await rejection(openRandomAccess(KEY, CONTEXT, header, ciphertext.length - 1000 - 16)));
    expectDecryptError(await rejection(openRandomAccess(KEY.subarray(1), CONTEXT, header, ciphertext.length)));
  });

  it("authenticates a wrong total length when the final chunk is checked", async () => {
    // Storage metadata claims the object is two chunks shorter: the claimed final chunk is a full non-final one.
    const plaintext = pseudoRandomBytes(3 * CHUNK_SIZE + 1000, 10);
    const ciphertext = await encrypt(KEY, CONTEXT, plaintext);
    const claimed = HEADER_SIZE + ENCRYPTED_CHUNK_SIZE + 1000 + TAG_SIZE;
    const reader = await openRandomAccess(KEY, CONTEXT, ciphertext.subarray(0, HEADER_SIZE), claimed);
    const final = reader.finalChunkSpan();
    expectDecryptError(
      await rejection(reader.authenticateFinalChunk(ciphertext.subarray(final.ciphertextStart, final.ciphertextEnd))),
    );
  });

  it("serves HTTP ranges: bytes=a-b, bytes=a-, bytes=-n", async () => {
    for (const length of [5000, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE + 777]) {
      const plaintext = pseudoRandomBytes(length, length);
      const stored = await encrypt(KEY, CONTEXT, plaintext);
      const cases: [{ start?: number; end?: number; suffix?: number }, number, number][] = [
        [{ start: 0, end: 0 }, 0, 1],
        [{ start: 10, end: 4999 }, 10, 5000],
        [{ start: CHUNK_SIZE - 3, end: CHUNK_SIZE + 3 }, CHUNK_SIZE - 3, CHUNK_SIZE + 4],
        [{ start: 100 }, 100, length],
        [{ start: 0, end: 10 * length }, 0, length],
        [{ suffix: 1 }, length - 1, length],
        [{ suffix: 500 }, length - 500, length],
        [{ suffix: 10 * length }, 0, length],
      ];
      for (const [range, start, endExclusive] of cases) {
        const end = Math.min(endExclusive, length);
        if (start >= length) continue;
        const response = await serveRange(stored, range);
        expect(response.status).toBe(206);
        expect(response.contentRange).toBe(`bytes ${start}-${end - 1}/${length}`);
        expect(response.body && equalBytes(response.body, plaintext.subarray(start, end))).toBe(true);
      }
      expect((await serveRange(stored, { start: length })).status).toBe(416);
      // A suffix range over a truncated object fails: its final chunk does not authenticate.
      const truncated = stored.slice(0, HEADER_SIZE + ENCRYPTED_CHUNK_SIZE + 100);
      if (length > CHUNK_SIZE + 100) {
        const error = await serveRange(truncated, { suffix: 10 }).then(
          () => new Error("served a truncated object"),
          (e: unknown) => e,
        );
        expectDecryptError(error);
      }
    }
  });
});
