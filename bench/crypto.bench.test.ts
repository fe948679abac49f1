/**
 * Benchmark of the at-rest crypto (Cobblestone-256, src/crypto/chunked-*.ts) and of offboarding (crypto-shred and
 * purge, src/tenant/lifecycle.ts) inside workerd. Run with `npm run bench -- --suite=crypto` (scripts/bench.mjs),
 * never by `npm test`. It asserts correctness only (round trips), never speed: it measures and prints one
 * `BENCH_RESULT {json}` line per part, which scripts/bench.mjs turns into the crypto section of BENCHMARKS.md.
 *
 *   1. memory: 256 MiB streamed through an encrypting then a decrypting stream (the TransformStreams, and the
 *      pull-based readables EncryptedBlobs uses), with the bytes in flight counted at every stage boundary
 *      (FlightMeter) and the StreamStats hooks; the sink checks every byte;
 *   2. throughput: 1 MiB and 64 MiB objects, encryption and decryption, the project's streams (64 KiB pieces)
 *      against the format's floor (a bare loop of one WebCrypto AES-256-GCM call per 16 KiB chunk, the goal) and,
 *      for information, single-shot AES-256-GCM over the whole buffer, plus a breakdown of where the streams spend
 *      their time;
 *   3. offboarding: adminOffboard through the tenant object's RPC (keys and sessions destroyed) and the purge by
 *      the object's alarm, for a tenant with 5,000 atoms and 200 documents; purgeStep timed step by step in a
 *      second, identical tenant; key destruction alone for 1, 10 and 100 key versions.
 * Everything runs inside tenant Durable Objects (`runInDurableObject`), where documents are encrypted in production.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  decrypt,
  decryptingReadable,
  decryptingStream,
  encrypt,
  encryptingReadable,
  encryptingStream,
} from "../src/crypto/chunked-aead";
import { BATCH_CHUNKS } from "../src/crypto/chunked-coders";
import { CHUNK_SIZE, chunkCountFor, chunkNonce, ENCRYPTED_CHUNK_SIZE, HEADER_SIZE } from "../src/crypto/chunked-format";
import { beginEncryption, openHeader } from "../src/crypto/chunked-keys";
import { decryptingTransformer, encryptingTransformer, type StreamStats } from "../src/crypto/chunked-stream";
import { MasterKeys } from "../src/crypto/master-keys";
import { TenantLifecycle } from "../src/tenant/lifecycle";
import { TenantContext } from "../src/tenant/tenant-context";
import { unwrap } from "../src/util/rpc-result";
import { Corpus } from "./corpus";
import {
  drain,
  FlightMeter,
  KiB,
  MiB,
  mark,
  matchesTemplate,
  meteredInspect,
  meteredSource,
  meteredTransformer,
  now,
  pseudoRandom,
  round1,
  round3,
  runTransformer,
  splittingStream,
  type Throughput,
  throughput,
  timeOps,
  viewSource,
} from "./crypto-measure";
import { remaining, seedTenant, type TenantShape, tenantStub } from "./crypto-tenant";
import { mean, percentile } from "./measure";

const PIECE = 64 * KiB;
const STREAM_TOTAL = 256 * MiB;
const GOAL_RATIO = 0.8;
const GOAL_PEAK_BYTES = 32 * MiB;
const KEY = pseudoRandom(new Uint8Array(32), 11);
const CONTEXT = new TextEncoder().encode("tenant-mcp-kb/blob/v1\0bench-crypto\0t/bench-crypto/docs/bench\x01");
const RUN = Date.now().toString(36);
const cryptoStub = () => tenantStub(`bench-crypto-${RUN}`);

async function collect(readable: ReadableStream<Uint8Array>): Promise<{ bytes: Uint8Array; error: unknown }> {
  const parts: Uint8Array[] = [];
  let error: unknown = null;
  const reader = readable.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
    }
  } catch (caught) {
    error = caught ?? new Error("stream errored");
  }
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.byteLength;
  }
  return { bytes, error };
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

function errorCode(error: unknown): string {
  return (error as { code?: string } | null)?.code ?? String(error);
}

describe("crypto benchmark", () => {
  // ------------------------------------------------------------------------------------------------------------
  it("memory: 256 MiB through an encrypting then a decrypting stream", async () => {
    const template = pseudoRandom(new Uint8Array(MiB), 5);
    type Variant = { name: string; piece: number; slowSink: boolean; readables: boolean; rss: boolean };
    const variants: Variant[] = [
      { name: "64 KiB pieces", piece: PIECE, slowSink: false, readables: false, rss: true },
      { name: "64 KiB pieces, slow consumer", piece: PIECE, slowSink: true, readables: false, rss: false },
      { name: "1 MiB pieces", piece: MiB, slowSink: false, readables: false, rss: false },
      { name: "64 KiB pieces, readables", piece: PIECE, slowSink: false, readables: true, rss: false },
      { name: "64 KiB pieces, readables, slow consumer", piece: PIECE, slowSink: true, readables: true, rss: false },
      { name: "1 MiB pieces, readables", piece: MiB, slowSink: false, readables: true, rss: false },
    ];
    const runs = [];
    await mark("memory-all:start");
    for (const variant of variants) {
      if (variant.rss) await mark("memory-stream:start");
      const run = await runInDurableObject(cryptoStub(), async () => {
        const meter = new FlightMeter(3);
        const encStats: StreamStats = { maxBufferedBytes: 0, maxEnqueuedBytes: 0 };
        const decStats: StreamStats = { maxBufferedBytes: 0, maxEnqueuedBytes: 0 };
        const t0 = now();
        const source = meteredSource(STREAM_TOTAL, variant.piece, template, meter);
        const out = variant.readables
          ? decryptingReadable(
              encryptingReadable(source, KEY, CONTEXT, { stats: encStats, inspect: meteredInspect(meter, 0, false) }),
              KEY,
              CONTEXT,
              { stats: decStats, inspect: meteredInspect(meter, 1, true) },
            )
          : source
              .pipeThrough(
                new TransformStream(meteredTransformer(encryptingTransformer(KEY, CONTEXT, encStats), meter, 1)),
              )
              .pipeThrough(
                new TransformStream(meteredTransformer(decryptingTransformer(KEY, CONTEXT, decStats), meter, 2)),
              );
        const reader = out.getReader();
        let offset = 0;
        // A readable's output is counted from the moment the reader gets it (its high-water mark is 0).
        const sinkAdds = variant.readables;
        let reads = 0;
        let mismatches = 0;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (!matchesTemplate(value, offset, template)) mismatches++;
          offset += value.byteLength;
          if (sinkAdds) meter.add(2, value.byteLength);
          meter.remove(2, value.byteLength);
          reads++;
          // Slow consumer: a timer turn (about 1 ms in workerd) after every MiB read.
          if (variant.slowSink && offset % MiB === 0) await new Promise((resolve) => setTimeout(resolve, 0));
        }
        const ms = now() - t0;
        expect(offset).toBe(STREAM_TOTAL);
        expect(mismatches).toBe(0);
        expect(meter.held).toBe(0);
        // Fixed buffers of the coders (allocated whole, whatever their fill), WebCrypto's transient copy of one
        // chunk's input plus its output per stage, and the coded chunks a readable's batch holds before its output
        // exists (up to BATCH_CHUNKS per stage; a transformer's batches are counted as its outputs).
        const batches = variant.readables ? 2 * BATCH_CHUNKS * ENCRYPTED_CHUNK_SIZE : 0;
        const fixed = CHUNK_SIZE + ENCRYPTED_CHUNK_SIZE + HEADER_SIZE + 2 * 2 * ENCRYPTED_CHUNK_SIZE + batches;
        return {
          variant: variant.name,
          totalBytes: STREAM_TOTAL,
          pieceBytes: variant.piece,
          maxInFlightBytes: meter.maxHeld,
          maxInFlightByStage: {
            sourceToEncryptor: meter.stageMax[0],
            encryptorToDecryptor: meter.stageMax[1],
            decryptorToSink: meter.stageMax[2],
          },
          largestPieceOrChunk: meter.largestPiece,
          encryptStats: { ...encStats },
          decryptStats: { ...decStats },
          fixedAndTransientBytes: fixed,
          accountedPeakBytes: meter.maxHeld + fixed,
          reads,
          wallMs: Math.round(ms),
          endToEndMiBps: round1(STREAM_TOTAL / MiB / (ms / 1000)),
        };
      });
      if (variant.rss) await mark("memory-stream:end");
      runs.push(run);
    }
    await mark("memory-all:end");
    const worst = Math.max(...runs.map((r) => r.accountedPeakBytes));
    console.log(
      `BENCH_RESULT ${JSON.stringify({
        suite: "crypto",
        part: "memory",
        goalPeakBytes: GOAL_PEAK_BYTES,
        worstAccountedPeakBytes: worst,
        runs,
        finishedAt: new Date().toISOString(),
      })}`,
    );
  });

  // ------------------------------------------------------------------------------------------------------------
  it("throughput: 1 MiB and 64 MiB, streams against the per-chunk floor and single-shot AES-256-GCM", async () => {
    const sizes = [
      { bytes: MiB, samples: 15, windowMs: 30 },
      { bytes: 64 * MiB, samples: 9, windowMs: 50 },
    ];
    const checks = await runInDurableObject(cryptoStub(), () => checkStreams());
    const results = [];
    for (const size of sizes) {
      const result = await runInDurableObject(cryptoStub(), () =>
        measureThroughput(size.bytes, size.samples, size.windowMs),
      );
      results.push(result);
      const e = result.encrypt.ratios;
      const d = result.decrypt.ratios;
      console.log(
        `bench: crypto ${size.bytes / MiB} MiB: encryptingReadable ${result.encrypt.ops.encryptingReadable?.medianMiBps} MiB/s ` +
          `= ${e.streamVsFloor} of the floor (${e.streamVsRaw} of single-shot); decryptingReadable ` +
          `${result.decrypt.ops.decryptingReadable?.medianMiBps} MiB/s = ${d.streamVsFloor} of the floor (${d.streamVsRaw})`,
      );
    }
    console.log(
      `BENCH_RESULT ${JSON.stringify({
        suite: "crypto",
        part: "throughput",
        goalRatio: GOAL_RATIO,
        goalBaseline: "raw per 16 KiB chunk",
        pieceBytes: PIECE,
        sizes: results,
        streamChecks: checks,
        clock: clockInfo(),
        finishedAt: new Date().toISOString(),
      })}`,
    );
  });

  // ------------------------------------------------------------------------------------------------------------
  it("offboarding: key destruction (adminOffboard RPC) and purge rate", async () => {
    const corpus = new Corpus();
    const shape: TenantShape = { keyVersions: 8, sessions: 40, atoms: 5_000, documents: 200 };

    // (a) Through the tenant object's RPC, purge driven by its alarm (as in production, 10 ms between steps).
    const rpcTenant = `bench-shred-rpc-${RUN}`;
    const rpcSeed = await seedTenant(rpcTenant, shape, corpus);
    const stub = tenantStub(rpcTenant);
    const t0 = now();
    const receipt = unwrap(await stub.adminOffboard(rpcTenant, "bench-operator"));
    const offboardRpcMs = now() - t0;
    const returnedAt = Date.now();
    const afterShred = await remaining(rpcTenant);
    let completedAt: string | null = null;
    let purgeBatches = 0;
    let purged: Record<string, number> = {};
    while (!completedAt) {
      const status = unwrap(await stub.adminStatus(rpcTenant));
      completedAt = status.receipt?.completedAt ?? null;
      purgeBatches = status.receipt?.purgeBatches ?? 0;
      purged = { ...(status.receipt?.purged ?? {}) };
      if (!completedAt) {
        if (now() - t0 > 180_000) throw new Error("the purge did not complete within 3 minutes");
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    }
    const alarmPurgeMs = Date.parse(completedAt) - returnedAt;
    const rpcLeft = await remaining(rpcTenant);
    expect(receipt.keyVersionsDestroyed.length).toBe(shape.keyVersions);
    expect(receipt.sessionsEnded).toBe(shape.sessions);
    expect(afterShred.keys).toBe(0);
    expect(afterShred.sessions).toBe(0);
    expect(rpcLeft).toMatchObject({ atoms: 0, vectors: 0, documents: 0, r2Objects: 0, cacheRows: 0 });

    // (b) The same shape, lifecycle.offboard and purgeStep called directly in the object, each step timed, the
    //     knowledge-base and R2 parts of each step timed separately.
    const directTenant = `bench-shred-direct-${RUN}`;
    const directSeed = await seedTenant(directTenant, shape, corpus);
    const direct = await runInDurableObject(tenantStub(directTenant), async (_instance, state) => {
      const context = new TenantContext(state, env, directTenant);
      const lifecycle = new TenantLifecycle(state.storage.sql, context);
      let t = now();
      const shred = lifecycle.offboard("bench-operator", MasterKeys.fromEnv(env).epochs());
      const offboardMs = now() - t;
      const parts = { kbMs: 0, blobsMs: 0 };
      const blobCalls: { ms: number; r2Objects: number }[] = [];
      const kbPurge = context.kb.purgeBatch.bind(context.kb);
      context.kb.purgeBatch = async (limit, inTransaction) => {
        const s = now();
        try {
          return await kbPurge(limit, inTransaction);
        } finally {
          parts.kbMs += now() - s;
        }
      };
      const blobsDelete = context.blobs.deleteObjects.bind(context.blobs);
      context.blobs.deleteObjects = async (keys) => {
        const s = now();
        await blobsDelete(keys);
        const ms = now() - s;
        parts.blobsMs += ms;
        blobCalls.push({ ms, r2Objects: keys.length });
      };
      const steps: number[] = [];
      t = now();
      for (let done = false; !done; ) {
        const s = now();
        done = (await lifecycle.purgeStep()) === "idle";
        steps.push(now() - s);
        if (steps.length > 1000) throw new Error("purge did not finish in 1000 steps");
      }
      const purgeMs = now() - t;
      return {
        offboardMs,
        sessionsEnded: shred.sessionsEnded,
        receipt: lifecycle.receipt(),
        steps,
        purgeMs,
        parts,
        blobCalls,
      };
    });
    const directLeft = await remaining(directTenant);
    expect(directLeft).toMatchObject({ keys: 0, sessions: 0, atoms: 0, vectors: 0, documents: 0, r2Objects: 0 });
    const directPurged = direct.receipt?.purged ?? { atoms: 0, r2Objects: 0, documents: 0, vectors: 0, cacheRows: 0 };
    const stepsSorted = [...direct.steps].sort((a, b) => a - b);

    // (c) Key destruction alone for 1, 10 and 100 key versions (50 sessions, no data): adminOffboard over RPC on
    //     fresh tenants, and lifecycle.offboard inside the object on others (1 ms clock: single-shot means).
    const sweep = [];
    for (const versions of [1, 10, 100]) {
      const rpcMs: number[] = [];
      const directMs: number[] = [];
      for (let rep = 0; rep < 5; rep++) {
        const small: TenantShape = { keyVersions: versions, sessions: 50, atoms: 0, documents: 0 };
        const a = `bench-shred-k${versions}-r${rep}-${RUN}`;
        await seedTenant(a, small, corpus);
        const s = now();
        const got = unwrap(await tenantStub(a).adminOffboard(a, "bench-operator"));
        rpcMs.push(now() - s);
        expect(got.keyVersionsDestroyed.length).toBe(versions);
        const b = `bench-shred-d${versions}-r${rep}-${RUN}`;
        await seedTenant(b, small, corpus);
        directMs.push(
          await runInDurableObject(tenantStub(b), (_instance, state) => {
            const lifecycle = new TenantLifecycle(state.storage.sql, new TenantContext(state, env, b));
            const t1 = now();
            lifecycle.offboard("bench-operator", MasterKeys.fromEnv(env).epochs());
            return now() - t1;
          }),
        );
      }
      const sorted = [...rpcMs].sort((x, y) => x - y);
      sweep.push({
        keyVersions: versions,
        sessions: 50,
        tenants: rpcMs.length,
        rpcMsMean: round3(mean(rpcMs)),
        rpcMsMedian: round3(percentile(sorted, 50)),
        rpcMsMax: round3(sorted.at(-1) as number),
        directMsMean: round3(mean(directMs)),
        directMsMax: round3(Math.max(...directMs)),
      });
    }

    const result = {
      suite: "crypto",
      part: "offboarding",
      shape,
      alarmDriven: {
        tenant: rpcTenant,
        seed: rpcSeed,
        offboardRpcMs: round3(offboardRpcMs),
        keyVersionsDestroyed: receipt.keyVersionsDestroyed.length,
        sessionsEnded: receipt.sessionsEnded,
        purgeMs: alarmPurgeMs,
        purgeBatches,
        purged,
        atomsPerSecond: Math.round(((purged.atoms ?? 0) / Math.max(alarmPurgeMs, 1)) * 1000),
        r2ObjectsPerSecond: Math.round(((purged.r2Objects ?? 0) / Math.max(alarmPurgeMs, 1)) * 1000),
      },
      direct: {
        tenant: directTenant,
        seed: directSeed,
        offboardMs: round3(direct.offboardMs),
        sessionsEnded: direct.sessionsEnded,
        purgeMs: Math.round(direct.purgeMs),
        steps: direct.steps.length,
        stepP50Ms: round3(percentile(stepsSorted, 50)),
        stepMaxMs: round3(stepsSorted.at(-1) as number),
        knowledgeBasePurgeMs: Math.round(direct.parts.kbMs),
        blobsPurgeMs: Math.round(direct.parts.blobsMs),
        purged: directPurged,
        atomsPerSecond: Math.round((directPurged.atoms / Math.max(direct.purgeMs, 1)) * 1000),
        atomsPerSecondInKnowledgeBasePurge: Math.round((directPurged.atoms / Math.max(direct.parts.kbMs, 1)) * 1000),
        r2ObjectsPerSecondInBlobsPurge: Math.round((directPurged.r2Objects / Math.max(direct.parts.blobsMs, 1)) * 1000),
        // The calls that deleted something (one list + one bulk delete of up to 1000 keys each), and the others
        // (every later step lists the empty prefix again).
        blobsPurgeDeletingCalls: direct.blobCalls.filter((c) => c.r2Objects > 0),
        blobsPurgeEmptyCallMeanMs: round3(mean(direct.blobCalls.filter((c) => c.r2Objects === 0).map((c) => c.ms))),
        r2ObjectsPerSecondInDeletingCalls: Math.round(
          (directPurged.r2Objects /
            Math.max(
              direct.blobCalls.filter((c) => c.r2Objects > 0).reduce((sum, c) => sum + c.ms, 0),
              1,
            )) *
            1000,
        ),
      },
      keyDestructionSweep: sweep,
      finishedAt: new Date().toISOString(),
    };
    console.log(`BENCH_RESULT ${JSON.stringify(result)}`);
  });
});

// ---------------------------------------------------------------------------------------------------------------

type OpSet = Record<string, () => Promise<unknown>>;

async function measureThroughput(bytes: number, samples: number, windowMs: number) {
  const plain = pseudoRandom(new Uint8Array(bytes), 3);
  const rawKey = await crypto.subtle.importKey("raw", KEY, { name: "AES-GCM", length: 256 }, false, [
    "encrypt",
    "decrypt",
  ]);
  const baseNonce = pseudoRandom(new Uint8Array(12), 9);
  const gcm = (iv: Uint8Array) => ({ name: "AES-GCM", iv, tagLength: 128 });
  const rawCiphertext = new Uint8Array(await crypto.subtle.encrypt(gcm(baseNonce), rawKey, plain));
  const object = await encrypt(KEY, CONTEXT, plain);
  const chunks = chunkCountFor(bytes);
  const t = (stream: ReadableStream<Uint8Array>) => drain(stream);

  const perChunk = (size: number) => async () => {
    for (let i = 0, at = 0; at < bytes; i++, at += size) {
      await crypto.subtle.encrypt(gcm(chunkNonce(baseNonce, i)), rawKey, plain.subarray(at, at + size));
    }
  };
  const tiny = plain.subarray(0, 16);
  const rawChunks: Uint8Array[] = [];
  for (let i = 0, at = 0; at < bytes; i++, at += CHUNK_SIZE) {
    const sealed = await crypto.subtle.encrypt(
      gcm(chunkNonce(baseNonce, i)),
      rawKey,
      plain.subarray(at, at + CHUNK_SIZE),
    );
    rawChunks.push(new Uint8Array(sealed));
  }
  // What EncryptedBlobs#write runs: the exact-length check as the readable's inspect hook.
  const lengthCheck = () => {
    let seen = 0;
    return (piece: Uint8Array | null) => {
      seen += piece?.byteLength ?? 0;
      if (seen > bytes || (piece === null && seen !== bytes)) throw new RangeError("wrong body length");
    };
  };
  const encryptOps: OpSet = {
    "raw single-shot": () => crypto.subtle.encrypt(gcm(baseNonce), rawKey, plain),
    "raw per 16 KiB chunk": perChunk(CHUNK_SIZE),
    "raw calls on 16-byte inputs, one per chunk": async () => {
      for (let i = 0; i < chunks; i++) await crypto.subtle.encrypt(gcm(chunkNonce(baseNonce, i)), rawKey, tiny);
    },
    "raw per 64 KiB chunk": perChunk(64 * KiB),
    "raw per 256 KiB chunk": perChunk(256 * KiB),
    "MessageCipher.seal loop": async () => {
      const { cipher } = await beginEncryption(KEY, CONTEXT);
      for (let i = 0, at = 0; i < chunks; i++, at += CHUNK_SIZE) {
        const isFinal = i === chunks - 1;
        await cipher.seal(i, plain.subarray(at, isFinal ? bytes : at + CHUNK_SIZE), isFinal);
      }
    },
    "transformer, no stream": () => runTransformer(encryptingTransformer(KEY, CONTEXT), plain, PIECE),
    "source drained alone (no crypto)": () => drain(viewSource(plain, PIECE)),
    "stream machinery only (TransformStream, no crypto)": () =>
      t(viewSource(plain, PIECE).pipeThrough(splittingStream())),
    encryptingReadable: () => t(encryptingReadable(viewSource(plain, PIECE), KEY, CONTEXT)),
    "encryptingReadable with the length check (EncryptedBlobs#write)": () =>
      t(encryptingReadable(viewSource(plain, PIECE), KEY, CONTEXT, { inspect: lengthCheck() })),
    "encryptingStream (TransformStream)": () => t(viewSource(plain, PIECE).pipeThrough(encryptingStream(KEY, CONTEXT))),
    "(aside) FixedLengthStream alone, no crypto, drained by a JS reader": () => {
      const fixed = new FixedLengthStream(bytes);
      return Promise.all([viewSource(plain, PIECE).pipeTo(fixed.writable), drain(fixed.readable)]);
    },
    "encrypt() whole object": () => encrypt(KEY, CONTEXT, plain),
  };
  const decryptOps: OpSet = {
    "raw single-shot": () => crypto.subtle.decrypt(gcm(baseNonce), rawKey, rawCiphertext),
    "raw per 16 KiB chunk": async () => {
      for (let i = 0; i < rawChunks.length; i++) {
        await crypto.subtle.decrypt(gcm(chunkNonce(baseNonce, i)), rawKey, rawChunks[i] as Uint8Array);
      }
    },
    "MessageCipher.open loop": async () => {
      const cipher = await openHeader(KEY, CONTEXT, object.subarray(0, HEADER_SIZE));
      for (let i = 0, at = HEADER_SIZE; i < chunks; i++, at += ENCRYPTED_CHUNK_SIZE) {
        const isFinal = i === chunks - 1;
        await cipher.open(i, object.subarray(at, isFinal ? object.byteLength : at + ENCRYPTED_CHUNK_SIZE), isFinal);
      }
    },
    "transformer, no stream": () => runTransformer(decryptingTransformer(KEY, CONTEXT), object, PIECE),
    "source drained alone (no crypto)": () => drain(viewSource(object, PIECE)),
    "stream machinery only (TransformStream, no crypto)": () =>
      t(viewSource(object, PIECE).pipeThrough(splittingStream())),
    decryptingReadable: () => t(decryptingReadable(viewSource(object, PIECE), KEY, CONTEXT)),
    "decryptingStream (TransformStream)": () =>
      t(viewSource(object, PIECE).pipeThrough(decryptingStream(KEY, CONTEXT))),
    "decrypt() whole object": () => decrypt(KEY, CONTEXT, object),
  };
  const started = now();
  const encTimes = await timeOps(encryptOps, samples, windowMs);
  const decTimes = await timeOps(decryptOps, samples, windowMs);
  const summarize = (times: Record<string, { msPerRun: number[]; inner: number }>) =>
    Object.fromEntries(Object.entries(times).map(([name, t]) => [name, throughput(bytes, t.msPerRun, t.inner)]));
  const enc = summarize(encTimes);
  const dec = summarize(decTimes);
  const FLOOR = "raw per 16 KiB chunk";
  const ratios = (ops: Record<string, Throughput>, stream: string, transformStream: string, whole: string) => {
    const vs = (name: string, base: string, key: "medianMiBps" | "bestMiBps" = "medianMiBps") =>
      ops[name] && ops[base] ? round3((ops[name] as Throughput)[key] / (ops[base] as Throughput)[key]) : null;
    return {
      // The goal: the stream against the format's own floor, medians of the same run.
      streamVsFloor: vs(stream, FLOOR),
      streamVsFloorBest: vs(stream, FLOOR, "bestMiBps"),
      transformStreamVsFloor: vs(transformStream, FLOOR),
      uploadShapedVsFloor: vs("encryptingReadable with the length check (EncryptedBlobs#write)", FLOOR),
      wholeObjectVsFloor: vs(whole, FLOOR),
      // Information: against single-shot AES-256-GCM over the whole buffer.
      streamVsRaw: vs(stream, "raw single-shot"),
      floorVsRaw: vs(FLOOR, "raw single-shot"),
      floor64KiBChunksVsRaw: vs("raw per 64 KiB chunk", "raw single-shot"),
      floor256KiBChunksVsRaw: vs("raw per 256 KiB chunk", "raw single-shot"),
    };
  };
  // Per-call model from the medians: a call on a 16 KiB chunk = fixed cost + 16 KiB at the single-shot rate.
  const perChunkUs = (ops: Record<string, Throughput>, name: string) =>
    round3(((ops[name] as Throughput).medianMs * 1000) / (bytes / CHUNK_SIZE));
  const model = {
    rawCallOn16KiBUs: perChunkUs(enc, FLOOR),
    rawCallOn16BytesUs: perChunkUs(enc, "raw calls on 16-byte inputs, one per chunk"),
    gcmOn16KiBAtSingleShotRateUs: perChunkUs(enc, "raw single-shot"),
    sourcePerChunkUs: perChunkUs(enc, "source drained alone (no crypto)"),
    streamMachineryPerChunkUs: perChunkUs(enc, "stream machinery only (TransformStream, no crypto)"),
    readablePerChunkUs: perChunkUs(enc, "encryptingReadable"),
    transformStreamPerChunkUs: perChunkUs(enc, "encryptingStream (TransformStream)"),
    decryptFloorPerChunkUs: perChunkUs(dec, FLOOR),
    decryptingReadablePerChunkUs: perChunkUs(dec, "decryptingReadable"),
  };
  return {
    bytes,
    chunks,
    model,
    wallMs: Math.round(now() - started),
    encrypt: {
      ops: enc,
      ratios: ratios(enc, "encryptingReadable", "encryptingStream (TransformStream)", "encrypt() whole object"),
    },
    decrypt: {
      ops: dec,
      ratios: ratios(dec, "decryptingReadable", "decryptingStream (TransformStream)", "decrypt() whole object"),
    },
  };
}

/** Correctness of the measured streams (not timed): round trips, a tampered chunk, truncation. */
async function checkStreams() {
  const plain = pseudoRandom(new Uint8Array(MiB + 1000), 21);
  const results: Record<string, boolean | number | string> = {};
  for (const piece of [1000, PIECE, 200_000]) {
    const sealed = await collect(encryptingReadable(viewSource(plain, piece), KEY, CONTEXT));
    const back = await collect(decryptingReadable(viewSource(sealed.bytes, piece), KEY, CONTEXT));
    const ok =
      sealed.error === null &&
      back.error === null &&
      equal(await decrypt(KEY, CONTEXT, sealed.bytes), plain) &&
      equal(back.bytes, plain);
    results[`readables round trip piece=${piece}`] = ok;
    expect(ok).toBe(true);
  }
  // Tampering with chunk 5: both shapes fail with ERR_DECRYPT after releasing an authenticated prefix.
  const object = await encrypt(KEY, CONTEXT, plain);
  const tampered = object.slice();
  const flip = HEADER_SIZE + 5 * ENCRYPTED_CHUNK_SIZE + 100;
  tampered[flip] = (tampered[flip] as number) ^ 1;
  const transformed = await collect(viewSource(tampered, PIECE).pipeThrough(decryptingStream(KEY, CONTEXT)));
  const pulled = await collect(decryptingReadable(viewSource(tampered, PIECE), KEY, CONTEXT));
  expect(errorCode(transformed.error)).toBe("ERR_DECRYPT");
  expect(errorCode(pulled.error)).toBe("ERR_DECRYPT");
  expect(equal(pulled.bytes, plain.subarray(0, pulled.bytes.byteLength))).toBe(true);
  expect(equal(transformed.bytes, plain.subarray(0, transformed.bytes.byteLength))).toBe(true);
  results["tampered chunk 5: bytes released (decryptingReadable / decryptingStream)"] =
    `${pulled.bytes.byteLength} / ${transformed.bytes.byteLength}`;
  const truncated = object.subarray(0, HEADER_SIZE + 8 * ENCRYPTED_CHUNK_SIZE);
  const cut = await collect(decryptingReadable(viewSource(truncated, PIECE), KEY, CONTEXT));
  expect(errorCode(cut.error)).toBe("ERR_DECRYPT");
  results["truncated at a chunk boundary: ERR_DECRYPT"] = true;
  return results;
}

/** Evidence for the timing method (as in the vector index bench). */
function clockInfo() {
  let prev = now();
  const start = prev;
  const steps: number[] = [];
  while (steps.length < 5 && now() - start < 200) {
    const t = now();
    if (t !== prev) {
      steps.push(t - prev);
      prev = t;
    }
  }
  return { advancesDuringComputation: steps.length > 0, smallestStepMs: steps.length ? Math.min(...steps) : null };
}
