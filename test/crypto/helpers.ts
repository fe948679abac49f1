import { expect } from "vitest";
import { KbError } from "../../src/errors";
import { hex } from "../../src/util/bytes";

/** Shared helpers for the crypto tests. */

export function fromHex(text: string): Uint8Array {
  if (text.length % 2 !== 0) throw new Error(`odd hex length ${text.length}`);
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export { hex };

export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.byteLength, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** zlib ("deflate" in the Compression Streams API) decompression. */
export async function inflate(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export async function sha512Hex(bytes: Uint8Array): Promise<string> {
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-512", bytes)));
}

/** Deterministic pseudorandom bytes (xorshift32), for reproducible plaintexts. */
export function pseudoRandomBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    out[i] = state & 0xff;
  }
  return out;
}

export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a rejection");
}

export function expectDecryptError(error: unknown): void {
  expect(error).toBeInstanceOf(KbError);
  expect((error as KbError).code).toBe("ERR_DECRYPT");
  expect((error as KbError).message).toBe("decryption failed");
}

export interface StreamRun {
  /** Everything the readable side released, concatenated. */
  readonly released: Uint8Array;
  /** The error the stream ended with, or undefined if it closed normally. */
  readonly error: unknown;
  /** Whether a write after the failure was rejected too (only checked when the stream failed). */
  readonly keepsFailing: boolean;
}

/** Writes `input` in pieces of `pieceSize` bytes through `stream` while reading its output concurrently. */
export async function runStream(
  stream: TransformStream<Uint8Array, Uint8Array>,
  input: Uint8Array,
  pieceSize: number,
): Promise<StreamRun> {
  const writer = stream.writable.getWriter();
  const reader = stream.readable.getReader();
  const parts: Uint8Array[] = [];
  const reading = (async (): Promise<unknown> => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return undefined;
        parts.push(value);
      }
    } catch (error) {
      return error;
    }
  })();
  let writeError: unknown;
  try {
    for (let offset = 0; offset < input.byteLength; offset += pieceSize) {
      // Copy each piece so the stream cannot rely on the caller's buffer staying unchanged.
      await writer.write(input.slice(offset, Math.min(offset + pieceSize, input.byteLength)));
    }
    await writer.close();
  } catch (error) {
    writeError = error;
  }
  const readError = await reading;
  const error = readError ?? writeError;
  let keepsFailing = false;
  if (error !== undefined) {
    keepsFailing = await writer.write(new Uint8Array(1)).then(
      () => false,
      () => true,
    );
  }
  return { released: concat(...parts), error, keepsFailing };
}
