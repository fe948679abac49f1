/**
 * Helpers of the crypto benchmark (bench/crypto.bench.test.ts): synthetic data, piece-wise sources and draining
 * sinks, interleaved timing of several operations, and an in-flight byte meter for the streaming pipeline.
 *
 * Clock: as in bench/measure.ts, `performance.now()` inside workerd is the wall clock with 1 ms resolution and, under
 * local workerd, advances during computation. Every figure is wall time on a shared machine.
 */
import { CHUNK_SIZE } from "../src/crypto/chunked-format";
import { percentile } from "./measure";

export const MiB = 2 ** 20;
export const KiB = 1024;
export const now = (): number => performance.now();

/** Fills `bytes` (length a multiple of 4) with xorshift32 output: incompressible, deterministic, fast. */
export function pseudoRandom(bytes: Uint8Array, seed: number): Uint8Array {
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return bytes;
}

/** A pull source over `bytes` in pieces of `piece` bytes (views, no copies). */
export function viewSource(bytes: Uint8Array, piece: number): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= bytes.byteLength) {
        controller.close();
        return;
      }
      const end = Math.min(bytes.byteLength, offset + piece);
      controller.enqueue(bytes.subarray(offset, end));
      offset = end;
    },
  });
}

/** Reads a stream to its end; returns the number of bytes. */
export async function drain(readable: ReadableStream<Uint8Array>): Promise<number> {
  const reader = readable.getReader();
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return total;
    total += value.byteLength;
  }
}

/**
 * The stream machinery alone: passes each piece on as 16 KiB views (the chunk count of the real transformers),
 * no crypto, no copies.
 */
export function splittingStream(): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(piece, controller) {
      for (let at = 0; at < piece.byteLength; at += CHUNK_SIZE) {
        controller.enqueue(piece.subarray(at, Math.min(piece.byteLength, at + CHUNK_SIZE)));
      }
    },
  });
}

/** A controller that only counts what a transformer enqueues (drives a transformer without streams). */
export function countingController(): {
  controller: TransformStreamDefaultController<Uint8Array>;
  bytes: () => number;
} {
  let total = 0;
  const controller = {
    desiredSize: 1,
    enqueue: (chunk: Uint8Array) => {
      total += chunk.byteLength;
    },
    error: () => {},
    terminate: () => {},
  };
  return { controller: controller as unknown as TransformStreamDefaultController<Uint8Array>, bytes: () => total };
}

/** Runs a transformer over `bytes` in pieces, without any stream: start, transform per piece, flush. */
export async function runTransformer(
  transformer: Transformer<Uint8Array, Uint8Array>,
  bytes: Uint8Array,
  piece: number,
): Promise<number> {
  const { controller, bytes: emitted } = countingController();
  await transformer.start?.(controller);
  for (let at = 0; at < bytes.byteLength; at += piece) {
    await transformer.transform?.(bytes.subarray(at, Math.min(bytes.byteLength, at + piece)), controller);
  }
  await transformer.flush?.(controller);
  return emitted();
}

/**
 * Interleaved timing: for each sample, every operation in turn, in a fresh pseudo-random order (so drift in the
 * machine's load and garbage collection spread over all of them). With a 1 ms clock a fast operation cannot be
 * timed alone, so each operation runs `inner` times back to back per sample, `inner` chosen during the warm-up so
 * that one sample spans about `windowMs`; the sample is the total divided by `inner`.
 */
export async function timeOps(
  ops: Record<string, () => Promise<unknown>>,
  samples: number,
  windowMs: number,
): Promise<Record<string, { msPerRun: number[]; inner: number }>> {
  const names = Object.keys(ops);
  const inner: Record<string, number> = {};
  for (const name of names) {
    const op = ops[name] as () => Promise<unknown>;
    await op(); // warm-up
    let runs = 0;
    const t0 = now();
    while (runs < 3 || now() - t0 < 10) {
      await op();
      runs++;
    }
    const estimate = Math.max((now() - t0) / runs, 0.001);
    inner[name] = Math.max(1, Math.min(1000, Math.ceil(windowMs / estimate)));
  }
  const out: Record<string, { msPerRun: number[]; inner: number }> = Object.fromEntries(
    names.map((name) => [name, { msPerRun: [] as number[], inner: inner[name] as number }]),
  );
  let seed = 0x2545f491;
  const random = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  for (let s = 0; s < samples; s++) {
    // A fresh order per sample: no operation always follows the same one (e.g. one that left 64 MiB of garbage).
    const order = [...names];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [order[i], order[j]] = [order[j] as string, order[i] as string];
    }
    for (const name of order) {
      const op = ops[name] as () => Promise<unknown>;
      const count = inner[name] as number;
      const t0 = now();
      for (let r = 0; r < count; r++) await op();
      out[name]?.msPerRun.push((now() - t0) / count);
    }
  }
  return out;
}

export interface Throughput {
  readonly medianMiBps: number;
  readonly bestMiBps: number;
  readonly worstMiBps: number;
  readonly medianMs: number;
  readonly samples: number;
  readonly inner: number;
}

export function throughput(bytes: number, msPerRun: readonly number[], inner: number): Throughput {
  const sorted = [...msPerRun].sort((a, b) => a - b);
  const mibps = (ms: number) => round1(bytes / MiB / (Math.max(ms, 0.001) / 1000));
  const median = percentile(sorted, 50);
  return {
    medianMiBps: mibps(median),
    bestMiBps: mibps(sorted[0] as number),
    worstMiBps: mibps(sorted.at(-1) as number),
    medianMs: Math.round(median * 1000) / 1000,
    samples: sorted.length,
    inner,
  };
}

export function round1(value: number): number {
  return Math.round(value * 10) / 10;
}

export function round3(value: number): number {
  return Math.round(value * 1000) / 1000;
}

/**
 * Bytes held by a streaming pipeline, counted at its boundaries: a byte is "in flight" from the moment a stage
 * creates or emits it until the next stage has finished consuming it (a transformer's transform() returned, or the
 * sink's read() delivered it). So in-flight bytes cover every stream queue between the stages, the piece a
 * transformer is working on, and what it enqueued while working; the transformers' own fixed buffers are reported
 * separately (StreamStats). Stages are numbered from the source.
 */
export class FlightMeter {
  held = 0;
  maxHeld = 0;
  readonly stageHeld: number[];
  readonly stageMax: number[];
  largestPiece = 0;

  constructor(stages: number) {
    this.stageHeld = new Array(stages).fill(0);
    this.stageMax = new Array(stages).fill(0);
  }

  /** `bytes` entered the queue after stage `stage` (created by the source = stage 0, or emitted by a transformer). */
  add(stage: number, bytes: number): void {
    this.held += bytes;
    this.maxHeld = Math.max(this.maxHeld, this.held);
    const value = (this.stageHeld[stage] as number) + bytes;
    this.stageHeld[stage] = value;
    this.stageMax[stage] = Math.max(this.stageMax[stage] as number, value);
    this.largestPiece = Math.max(this.largestPiece, bytes);
  }

  /** `bytes` from the queue after stage `stage` were fully consumed by the next stage. */
  remove(stage: number, bytes: number): void {
    this.held -= bytes;
    this.stageHeld[stage] = (this.stageHeld[stage] as number) - bytes;
  }
}

/** Wraps a transformer (stage `stage` of the meter): counts what it consumes (when done) and what it emits. */
export function meteredTransformer(
  inner: Transformer<Uint8Array, Uint8Array>,
  meter: FlightMeter,
  stage: number,
): Transformer<Uint8Array, Uint8Array> {
  const wrap = (controller: TransformStreamDefaultController<Uint8Array>) =>
    ({
      get desiredSize() {
        return controller.desiredSize;
      },
      enqueue: (chunk: Uint8Array) => {
        meter.add(stage, chunk.byteLength);
        controller.enqueue(chunk);
      },
      error: (reason: unknown) => controller.error(reason),
      terminate: () => controller.terminate(),
    }) as TransformStreamDefaultController<Uint8Array>;
  return {
    start: async (controller) => {
      await inner.start?.(wrap(controller));
    },
    transform: async (chunk, controller) => {
      await inner.transform?.(chunk, wrap(controller));
      meter.remove(stage - 1, chunk.byteLength);
    },
    flush: async (controller) => {
      await inner.flush?.(wrap(controller));
    },
  };
}

/**
 * A source of `total` bytes in fresh pieces of `piece` bytes (each a copy of a 1 MiB template at the right offset,
 * so the sink can check every byte without the message ever existing whole). Counted as stage 0 of the meter.
 */
export function meteredSource(
  total: number,
  piece: number,
  template: Uint8Array,
  meter: FlightMeter,
): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= total) {
        controller.close();
        return;
      }
      const size = Math.min(piece, total - offset);
      const bytes = new Uint8Array(size);
      for (let at = 0; at < size; ) {
        const from = (offset + at) % template.byteLength;
        const take = Math.min(size - at, template.byteLength - from);
        bytes.set(template.subarray(from, from + take), at);
        at += take;
      }
      offset += size;
      meter.add(0, size);
      controller.enqueue(bytes);
    },
  });
}

/** True if `chunk` equals the template-generated message at `offset`. */
export function matchesTemplate(chunk: Uint8Array, offset: number, template: Uint8Array): boolean {
  const size = template.byteLength;
  if (offset % 4 === 0 && chunk.byteOffset % 4 === 0 && chunk.byteLength % 4 === 0 && size % 4 === 0) {
    const got = new Uint32Array(chunk.buffer, chunk.byteOffset, chunk.byteLength >>> 2);
    const want = new Uint32Array(template.buffer, template.byteOffset, size >>> 2);
    const mask = (size >>> 2) - 1; // template size is a power of two
    const first = offset >>> 2;
    for (let i = 0; i < got.length; i++) if (got[i] !== want[(first + i) & mask]) return false;
    return true;
  }
  for (let i = 0; i < chunk.byteLength; i++) if (chunk[i] !== template[(offset + i) % size]) return false;
  return true;
}

/** Marks a phase for scripts/bench.mjs, which samples the workerd process's RSS from outside (see its notes). */
export async function mark(name: string, settleMs = 400): Promise<void> {
  console.log(`BENCH_MARK ${JSON.stringify({ mark: name })}`);
  await new Promise((resolve) => setTimeout(resolve, settleMs));
}

/**
 * A readable's `inspect` hook that meters its source pieces (stage `stage`): a piece is consumed once the readable
 * reads the next one (or the end), since it codes a piece to its end before reading on. `addsOnRead` counts the
 * piece from the moment it is read (a readable source with a high-water mark of 0 creates its output then).
 */
export function meteredInspect(
  meter: FlightMeter,
  stage: number,
  addsOnRead: boolean,
): (piece: Uint8Array | null) => void {
  let previous = 0;
  return (piece) => {
    meter.remove(stage, previous);
    previous = piece?.byteLength ?? 0;
    if (addsOnRead) meter.add(stage, previous);
  };
}
