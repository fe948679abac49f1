import { afterAll, describe, expect, it } from "vitest";
import {
  CHUNK_SIZE,
  decrypt,
  decryptingStream,
  ENCRYPTED_CHUNK_SIZE,
  encrypt,
  HEADER_SIZE,
  openRandomAccess,
} from "../../src/crypto/chunked-aead";
import { concat, equalBytes, expectDecryptError, pseudoRandomBytes, runStream } from "./helpers";

/*
 * Tink-style mutation sweep: every mutation of a valid object (truncation, extension, bit flips in each region,
 * deleted / duplicated / swapped / spliced chunks, wrong key or context) must fail with ERR_DECRYPT in whole-object,
 * streaming and random-access decryption, and the stream must never release a byte that is not part of the
 * original plaintext's authenticated prefix.
 */

const KEY = pseudoRandomBytes(32, 0x5eed);
const CONTEXT = new TextEncoder().encode("tenant-a/object-1");

interface Mutation {
  readonly category: string;
  readonly name: string;
  readonly ciphertext: Uint8Array;
  readonly key?: Uint8Array;
  readonly context?: Uint8Array;
}

/** [start, end) of chunk k in an object of `total` bytes with `chunks` chunks. */
function chunkBounds(k: number, chunks: number, total: number): [number, number] {
  const start = HEADER_SIZE + k * ENCRYPTED_CHUNK_SIZE;
  return [start, k === chunks - 1 ? total : start + ENCRYPTED_CHUNK_SIZE];
}

function splitChunks(ciphertext: Uint8Array, chunks: number): Uint8Array[] {
  return Array.from({ length: chunks }, (_, k) => ciphertext.slice(...chunkBounds(k, chunks, ciphertext.byteLength)));
}

function flipBit(bytes: Uint8Array, offset: number, bit: number): Uint8Array {
  const out = bytes.slice();
  out[offset] = (out[offset] ?? 0) ^ (1 << bit);
  return out;
}

function mutations(ciphertext: Uint8Array, other: Uint8Array, plaintextLength: number): Mutation[] {
  const total = ciphertext.byteLength;
  const chunks = Math.floor(plaintextLength / CHUNK_SIZE) + 1;
  const header = ciphertext.subarray(0, HEADER_SIZE);
  const parts = splitChunks(ciphertext, chunks);
  const otherChunks = Math.floor((other.byteLength - HEADER_SIZE) / ENCRYPTED_CHUNK_SIZE) + 1;
  const otherParts = splitChunks(other, otherChunks);
  const list: Mutation[] = [];
  const add = (category: string, name: string, bytes: Uint8Array, extra: Partial<Mutation> = {}) =>
    list.push({ category, name, ciphertext: bytes, ...extra });

  // Truncation: inside the header, at every chunk boundary, and at several points inside each chunk.
  const cuts = new Set([0, 1, 23, 24, 25, 40, 55, HEADER_SIZE, HEADER_SIZE + 1, total - 1]);
  for (let k = 0; k < chunks; k++) {
    const [start, end] = chunkBounds(k, chunks, total);
    for (const cut of [start, start + 1, start + 15, start + 16, start + 17, start + 8000, end - 16, end - 1]) {
      if (cut >= start && cut < end) cuts.add(cut);
    }
    cuts.add(end);
  }
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    if (cut < total) add("truncate", `to ${cut} bytes`, ciphertext.slice(0, cut));
  }

  // Extension.
  add("append", "one zero byte", concat(ciphertext, new Uint8Array(1)));
  add("append", "16 bytes", concat(ciphertext, new Uint8Array(16)));
  add("append", "this message's final chunk again", concat(ciphertext, parts[chunks - 1] ?? new Uint8Array()));
  add("append", "this message's chunk 0 again", concat(ciphertext, parts[0] ?? new Uint8Array()));
  for (const [k, part] of otherParts.entries())
    add("append", `chunk ${k} of another message`, concat(ciphertext, part));

  // One flipped bit in each region.
  for (const offset of [0, 11, 23]) add("flip", `salt byte ${offset}`, flipBit(ciphertext, offset, offset % 8));
  for (const offset of [24, 40, 55]) add("flip", `commitment byte ${offset}`, flipBit(ciphertext, offset, offset % 8));
  for (let k = 0; k < chunks; k++) {
    const [start, end] = chunkBounds(k, chunks, total);
    const tag = end - 16;
    if (tag > start) {
      for (const offset of [start, Math.floor((start + tag) / 2), tag - 1]) {
        add("flip", `chunk ${k} body byte ${offset - start}`, flipBit(ciphertext, offset, k % 8));
      }
    }
    for (const offset of [tag, tag + 7, end - 1]) {
      add("flip", `chunk ${k} tag byte ${offset - tag}`, flipBit(ciphertext, offset, 7 - (k % 8)));
    }
  }

  // Chunk-level edits.
  for (let k = 0; k < chunks; k++) {
    add("delete", `chunk ${k}`, concat(header, ...parts.filter((_, i) => i !== k)));
    add("duplicate", `chunk ${k}`, concat(header, ...parts.flatMap((part, i) => (i === k ? [part, part] : [part]))));
    const spliced = otherParts[k];
    if (spliced) {
      add("splice", `chunk ${k} from another message`, concat(header, ...parts.map((p, i) => (i === k ? spliced : p))));
    }
    for (let j = k + 1; j < chunks; j++) {
      const swapped = parts.map((part, i) => (i === k ? parts[j] : i === j ? parts[k] : part) ?? part);
      add("swap", `chunks ${k} and ${j}`, concat(header, ...swapped));
    }
  }
  add("splice", "another message's header", concat(other.subarray(0, HEADER_SIZE), ...parts));

  // Wrong key or context on the intact object.
  add("key", "one bit flipped", ciphertext, { key: flipBit(KEY, 31, 0) });
  add("key", "31 bytes", ciphertext, { key: KEY.subarray(0, 31) });
  add("key", "33 bytes", ciphertext, { key: concat(KEY, new Uint8Array(1)) });
  add("context", "empty", ciphertext, { context: new Uint8Array(0) });
  add("context", "one byte longer", ciphertext, { context: concat(CONTEXT, new Uint8Array(1)) });
  add("context", "another object", ciphertext, { context: new TextEncoder().encode("tenant-a/object-2") });
  return list;
}

const SHAPES = [
  { name: "3 full chunks + short final chunk", length: 3 * CHUNK_SIZE + 1000 },
  { name: "exactly 3 chunks (empty final chunk)", length: 3 * CHUNK_SIZE },
  { name: "single short chunk", length: 100 },
  { name: "empty message", length: 0 },
];

const tally = new Map<string, number>();
afterAll(() => {
  const rows = [...tally.entries()].sort(([a], [b]) => a.localeCompare(b));
  console.log(`Mutation sweep (mutations per shape/category):\n${rows.map(([k, n]) => `  ${k}: ${n}`).join("\n")}`);
});

describe("mutation sweep", () => {
  for (const shape of SHAPES) {
    it(shape.name, async () => {
      const plaintext = pseudoRandomBytes(shape.length, shape.length + 1);
      const ciphertext = await encrypt(KEY, CONTEXT, plaintext);
      const other = await encrypt(KEY, CONTEXT, pseudoRandomBytes(2 * CHUNK_SIZE + 5, 99));
      expect(equalBytes(await decrypt(KEY, CONTEXT, ciphertext), plaintext)).toBe(true);

      const prefixKey = `${shape.name} / stream runs that released an authenticated prefix before failing`;
      for (const mutation of mutations(ciphertext, other, plaintext.byteLength)) {
        const key = mutation.key ?? KEY;
        const context = mutation.context ?? CONTEXT;
        const label = `${mutation.category}: ${mutation.name}`;
        tally.set(`${shape.name} / ${mutation.category}`, (tally.get(`${shape.name} / ${mutation.category}`) ?? 0) + 1);

        // Whole object.
        const whole = await decrypt(key, context, mutation.ciphertext).then(
          () => new Error(`${label}: decrypted`),
          (error: unknown) => error,
        );
        expectDecryptError(whole);

        // Streaming: released bytes are a chunk-aligned prefix of the original plaintext; then ERR_DECRYPT.
        const pieceSizes = [997, ENCRYPTED_CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE + 1, mutation.ciphertext.byteLength || 1];
        if (mutation.ciphertext.byteLength <= 2048) pieceSizes.push(1, 7);
        for (const pieceSize of pieceSizes) {
          const run = await runStream(decryptingStream(key, context), mutation.ciphertext, pieceSize);
          expectDecryptError(run.error);
          expect(run.keepsFailing, label).toBe(true);
          expect(run.released.byteLength % CHUNK_SIZE, label).toBe(0);
          expect(equalBytes(run.released, plaintext.subarray(0, run.released.byteLength)), label).toBe(true);
          if (run.released.byteLength > 0) tally.set(prefixKey, (tally.get(prefixKey) ?? 0) + 1);
        }

        // Random access: opening, the final chunk and the whole body either fail or give the original bytes.
        if (mutation.ciphertext.byteLength < HEADER_SIZE) continue;
        const reader = await openRandomAccess(
          key,
          context,
          mutation.ciphertext.subarray(0, HEADER_SIZE),
          mutation.ciphertext.byteLength,
        ).catch((error: unknown) => {
          expectDecryptError(error);
          return undefined;
        });
        if (!reader) continue;
        const final = reader.finalChunkSpan();
        await reader
          .authenticateFinalChunk(mutation.ciphertext.subarray(final.ciphertextStart, final.ciphertextEnd))
          .then(
            (tail) => expect(equalBytes(tail, plaintext.subarray(final.plaintextStart)), label).toBe(true),
            (error: unknown) => expectDecryptError(error),
          );
        const body = await reader.decryptChunks(0, mutation.ciphertext.subarray(HEADER_SIZE)).then(
          () => new Error(`${label}: random access decrypted the whole body`),
          (error: unknown) => error,
        );
        expectDecryptError(body);
      }
    });
  }
});
