import { CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE } from "../crypto/chunked-format";
import type { ChunkSpan, RandomAccessDecryptor } from "../crypto/chunked-random-access";
import { KbError } from "../errors";
import type { ByteRange } from "./ranges";

/**
 * A Range read as a stream: the ciphertext slice `span` streams in from R2 and is decrypted one 16 KiB chunk at a
 * time, each chunk released only after it authenticated, trimmed to `wanted`. Pull-based (high-water mark 0), so
 * memory is one chunk plus what R2 hands over in one read, whatever the range's size: a `bytes=0-` of a 1 GiB
 * document costs what a whole GET costs. A chunk that fails to authenticate errors the stream (and it stays
 * errored); no byte of it is released.
 */
export function rangeReadable(
  decryptor: RandomAccessDecryptor,
  span: ChunkSpan,
  wanted: ByteRange,
  ciphertext: ReadableStream<Uint8Array>,
): ReadableStream<Uint8Array> {
  const source = ciphertext.getReader();
  let index = span.firstChunk;
  let offset = span.ciphertextStart;
  let pending: Uint8Array[] = [];
  let buffered = 0;

  // A full chunk, or the final one (shorter, possibly only its tag), which ends the slice.
  const expected = () => (index === decryptor.chunkCount - 1 ? span.ciphertextEnd - offset : ENCRYPTED_CHUNK_SIZE);

  /** Exactly `size` bytes of ciphertext (the next chunk), reading from R2 as needed. */
  const take = async (size: number): Promise<Uint8Array> => {
    while (buffered < size) {
      const { done, value } = await source.read();
      if (done) throw new KbError("ERR_DECRYPT", "decryption failed"); // truncated in storage
      pending.push(value);
      buffered += value.byteLength;
    }
    const all = pending.length === 1 ? (pending[0] as Uint8Array) : concat(pending, buffered);
    const chunk = all.slice(0, size);
    const rest = all.subarray(size);
    pending = rest.byteLength ? [rest] : [];
    buffered = rest.byteLength;
    return chunk;
  };

  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        // Loops until it enqueues or closes: a pull that returns with neither is never called again (the final
        // chunk of a document whose size is a multiple of 16 KiB is empty, and must still be authenticated).
        for (;;) {
          if (index > span.lastChunk) {
            controller.close();
            await source.cancel().catch(() => undefined);
            return;
          }
          const plain = await decryptor.decryptChunks(index, await take(expected()));
          const chunkStart = index * CHUNK_SIZE;
          const from = Math.max(0, wanted.start - chunkStart);
          const to = Math.min(plain.byteLength, wanted.end - chunkStart);
          offset += ENCRYPTED_CHUNK_SIZE;
          index += 1;
          if (to > from) {
            controller.enqueue(plain.subarray(from, to));
            return;
          }
        }
      },
      async cancel(reason) {
        await source.cancel(reason).catch(() => undefined);
      },
    },
    { highWaterMark: 0 },
  );
}

function concat(parts: readonly Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}
