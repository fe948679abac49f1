import { describe, expect, it } from "vitest";
import {
  CHUNK_SIZE,
  decrypt,
  ENCRYPTED_CHUNK_SIZE,
  encrypt,
  encryptingStream,
  HEADER_SIZE,
} from "../../src/crypto/chunked-aead";
import { BATCH_CHUNKS } from "../../src/crypto/chunked-coders";
import { decryptingTransformer, encryptingTransformer, type StreamStats } from "../../src/crypto/chunked-stream";
import { concat, equalBytes, expectDecryptError, pseudoRandomBytes, rejection, runStream } from "./helpers";

const KEY = pseudoRandomBytes(32, 77);
const CONTEXT = new TextEncoder().encode("tenant-b/blob");

/** Byte p of the synthetic message: computable anywhere, so neither side of the test holds the whole message. */
function expectedByte(p: number): number {
  return (Math.imul(p, 2654435761) >>> 13) & 0xff;
}

function syntheticSource(total: number, pieceSize: number): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= total) {
        controller.close();
        return;
      }
      const piece = new Uint8Array(Math.min(pieceSize, total - offset));
      for (let i = 0; i < piece.length; i++) piece[i] = expectedByte(offset + i);
      offset += piece.length;
      controller.enqueue(piece);
    },
  });
}

/** A controller that records what a transformer enqueues, to drive a transformer step by step. */
function recordingController(): { controller: TransformStreamDefaultController<Uint8Array>; out: Uint8Array[] } {
  const out: Uint8Array[] = [];
  const controller = {
    desiredSize: 1,
    enqueue: (chunk: Uint8Array) => out.push(chunk),
    error: () => {},
    terminate: () => {},
  };
  return { controller: controller as unknown as TransformStreamDefaultController<Uint8Array>, out };
}

describe("streaming memory bound", () => {
  for (const pieceSize of [64 * 1024, 1024 * 1024, 1000]) {
    it(`8 MiB through encryptingStream and decryptingStream in ${pieceSize}-byte pieces`, async () => {
      const total = 8 * 1024 * 1024;
      const encStats: StreamStats = { maxBufferedBytes: 0, maxEnqueuedBytes: 0 };
      const decStats: StreamStats = { maxBufferedBytes: 0, maxEnqueuedBytes: 0 };
      const plain = syntheticSource(total, pieceSize)
        .pipeThrough(new TransformStream(encryptingTransformer(KEY, CONTEXT, encStats)))
        .pipeThrough(new TransformStream(decryptingTransformer(KEY, CONTEXT, decStats)));
      const reader = plain.getReader();
      let offset = 0;
      let largestRead = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        largestRead = Math.max(largestRead, value.byteLength);
        for (let i = 0; i < value.byteLength; i++) {
          if (value[i] !== expectedByte(offset + i)) throw new Error(`mismatch at ${offset + i}`);
        }
        offset += value.byteLength;
      }
      expect(offset).toBe(total);
      // Each transformer holds at most one (encrypted) chunk of its own, and emits the chunks a piece completes in
      // outputs of at most BATCH_CHUNKS chunks.
      const chunksPerPiece = Math.min(BATCH_CHUNKS, Math.ceil(pieceSize / CHUNK_SIZE) + 1);
      expect(encStats.maxBufferedBytes).toBeLessThan(CHUNK_SIZE);
      expect(encStats.maxEnqueuedBytes).toBeLessThanOrEqual(chunksPerPiece * ENCRYPTED_CHUNK_SIZE);
      expect(decStats.maxBufferedBytes).toBeLessThanOrEqual(ENCRYPTED_CHUNK_SIZE);
      expect(decStats.maxEnqueuedBytes).toBeLessThanOrEqual(chunksPerPiece * CHUNK_SIZE);
      expect(largestRead).toBeLessThanOrEqual(BATCH_CHUNKS * CHUNK_SIZE);
      if (pieceSize < CHUNK_SIZE) expect(encStats.maxEnqueuedBytes).toBe(ENCRYPTED_CHUNK_SIZE);
      console.log(
        `8 MiB in ${pieceSize}-byte pieces: encrypt buffered<=${encStats.maxBufferedBytes} emitted<=${encStats.maxEnqueuedBytes}; ` +
          `decrypt buffered<=${decStats.maxBufferedBytes} emitted<=${decStats.maxEnqueuedBytes}`,
      );
    });
  }
});

describe("streaming behaviour", () => {
  it("encryptingStream output equals whole-object encrypt with the same salt, for every piece size", async () => {
    const salt = pseudoRandomBytes(24, 3);
    for (const length of [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, 3 * CHUNK_SIZE + 17]) {
      const plaintext = pseudoRandomBytes(length, length + 5);
      const expected = await encrypt(KEY, CONTEXT, plaintext, salt);
      for (const pieceSize of [1, 1000, CHUNK_SIZE, CHUNK_SIZE + 1, Math.max(1, length)]) {
        if (pieceSize === 1 && length > 2 * CHUNK_SIZE) continue;
        const run = await runStream(
          new TransformStream(encryptingTransformer(KEY, CONTEXT, undefined, salt)),
          plaintext,
          pieceSize,
        );
        expect(run.error).toBeUndefined();
        expect(equalBytes(run.released, expected), `length ${length} piece ${pieceSize}`).toBe(true);
      }
      expect(equalBytes(await decrypt(KEY, CONTEXT, expected), plaintext)).toBe(true);
    }
  });

  it("encryptingStream uses a fresh random salt per message", async () => {
    const a = await runStream(encryptingStream(KEY, CONTEXT), new Uint8Array(10), 10);
    const b = await runStream(encryptingStream(KEY, CONTEXT), new Uint8Array(10), 10);
    expect(equalBytes(a.released.subarray(0, 24), b.released.subarray(0, 24))).toBe(false);
    expect(a.released.byteLength).toBe(HEADER_SIZE + 10 + 16);
  });

  it("holds a full encrypted chunk back until a byte after it arrives", async () => {
    const plaintext = pseudoRandomBytes(CHUNK_SIZE + 5, 8);
    const ciphertext = await encrypt(KEY, CONTEXT, plaintext);
    const transformer = decryptingTransformer(KEY, CONTEXT);
    const { controller, out } = recordingController();
    await transformer.start?.(controller);
    await transformer.transform?.(ciphertext.slice(0, HEADER_SIZE + ENCRYPTED_CHUNK_SIZE), controller);
    expect(out.length).toBe(0); // Chunk 0 is complete, but the stream could still end here (truncation).
    await transformer.transform?.(ciphertext.slice(HEADER_SIZE + ENCRYPTED_CHUNK_SIZE, -1), controller);
    expect(out.length).toBe(1); // More bytes followed, so chunk 0 is not final: authenticated and released.
    expect(equalBytes(out[0] ?? new Uint8Array(), plaintext.subarray(0, CHUNK_SIZE))).toBe(true);
    await transformer.transform?.(ciphertext.slice(-1), controller);
    await transformer.flush?.(controller);
    expect(equalBytes(concat(...out), plaintext)).toBe(true);
  });

  it("fails on end of stream right after a full chunk, without releasing it", async () => {
    const ciphertext = await encrypt(KEY, CONTEXT, pseudoRandomBytes(CHUNK_SIZE, 9));
    const run = await runStream(
      new TransformStream(decryptingTransformer(KEY, CONTEXT)),
      ciphertext.subarray(0, HEADER_SIZE + ENCRYPTED_CHUNK_SIZE),
      4096,
    );
    expectDecryptError(run.error);
    expect(run.released.byteLength).toBe(0);
  });

  it("rejects a wrong-size key: RangeError when encrypting, ERR_DECRYPT when decrypting", async () => {
    expect(() => encryptingStream(new Uint8Array(31), CONTEXT)).toThrow(RangeError);
    expect(() => encryptingStream(new Uint8Array(33), CONTEXT)).toThrow(RangeError);
    const ciphertext = await encrypt(KEY, CONTEXT, new Uint8Array(3));
    for (const key of [new Uint8Array(0), KEY.subarray(0, 31), concat(KEY, new Uint8Array(1))]) {
      const run = await runStream(new TransformStream(decryptingTransformer(key, CONTEXT)), ciphertext, 7);
      expectDecryptError(run.error);
      expect(run.released.byteLength).toBe(0);
    }
  });

  it("keeps failing after a failure, even when later input would be valid", async () => {
    const ciphertext = await encrypt(KEY, CONTEXT, pseudoRandomBytes(2 * CHUNK_SIZE, 10));
    const transformer = decryptingTransformer(KEY, CONTEXT);
    const { controller } = recordingController();
    await transformer.start?.(controller);
    const bad = ciphertext.slice(0, HEADER_SIZE);
    bad[30] = (bad[30] ?? 0) ^ 1;
    expectDecryptError(await rejection(Promise.resolve(transformer.transform?.(bad, controller))));
    expectDecryptError(
      await rejection(Promise.resolve(transformer.transform?.(ciphertext.subarray(HEADER_SIZE), controller))),
    );
    expectDecryptError(await rejection(Promise.resolve(transformer.flush?.(controller))));
  });

  it("rejects pieces that are not Uint8Array", async () => {
    const transformer = decryptingTransformer(KEY, CONTEXT);
    const { controller } = recordingController();
    const piece = "not bytes" as unknown as Uint8Array;
    await expect(Promise.resolve(transformer.transform?.(piece, controller))).rejects.toThrow(TypeError);
  });
});
