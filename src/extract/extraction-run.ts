import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { KbError } from "../errors";
import type { AiBinding } from "../kb/embedder";
import { type RpcResult, settle, unwrap } from "../util/rpc-result";
import { yieldToEventLoop } from "../util/yield";
import { DEFAULT_EXTRACTION_MODEL, refineWithModel } from "./model-extractor";
import { kindFor, type Segment, Segmenter } from "./segmenter";

/**
 * One extraction run = one fresh Durable Object (`newUniqueId()`, never reused), created for exactly one tenant.
 * It holds no keys and no other tenant's anything: it gets the document's plaintext and a write-back channel from
 * its tenant's object (an RPC capability valid for this run only), splits the text into atoms, and hands them back.
 * Memory is bounded by the segmenter (the document streams through). A second ingest on the same object is refused,
 * and the object wipes its state by alarm shortly after it finishes (keeping only a tombstone).
 */
export interface RunInit {
  readonly tenant: string;
  readonly runId: string;
  readonly documentId: string;
  readonly contentType: string;
  readonly extractor: "deterministic" | "model";
}

export interface RunChannel {
  readDocument(): Promise<ReadableStream<Uint8Array>>;
  /** `segmentsDone`: source segments of this attempt handed back once these are stored (for the run's counts). */
  writeSegments(segments: Segment[], segmentsDone: number): Promise<RpcResult<number>>;
  progress(segments: number, bytes: number): Promise<void>;
}

export interface RunRecord {
  readonly tenant: string;
  readonly runId: string;
  readonly documentId: string;
  status: "running" | "done" | "failed";
  segments: number;
  written: number;
  error: string | null;
  readonly startedAt: number;
  finishedAt: number | null;
}

export interface RunResult {
  readonly segments: number;
  readonly written: number;
  readonly flagged: number;
}

const BATCH = 25;
/**
 * Characters pushed into the segmenter between two yields to the event loop (a few milliseconds of CPU), so a large
 * document never holds a thread other objects may share. Segments do not depend on how the text is cut.
 */
const SEGMENT_SLICE = 4096;
const CLEANUP_DELAY_MS = 10 * 60_000;

export class ExtractionRun extends DurableObject<Env> {
  /** True while this instance is extracting (in memory: an instance that was evicted or aborted forgets it). */
  #executing = false;
  /** Set by wipe(): an attempt still running must not write its record back. */
  #wiped = false;

  /** One ingest, once per object; a refusal comes back as a value (src/util/rpc-result.ts), not a thrown error. */
  async execute(init: RunInit, channel: RunChannel): Promise<RpcResult<RunResult>> {
    return settle(() => this.#execute(init, channel));
  }

  async #execute(init: RunInit, channel: RunChannel): Promise<RunResult> {
    if ((await this.ctx.storage.get("run")) || (await this.ctx.storage.get("spent"))) {
      throw new KbError("ERR_RUN_REFUSED", "this run object has already served an ingest");
    }
    const record: RunRecord = {
      tenant: init.tenant,
      runId: init.runId,
      documentId: init.documentId,
      status: "running",
      segments: 0,
      written: 0,
      error: null,
      startedAt: Date.now(),
      finishedAt: null,
    };
    await this.ctx.storage.put("run", record);
    // The clean-up alarm is set before any work: an attempt cut short (eviction, crash, abort) never reaches the
    // `finally` below, and its record must still be wiped.
    await this.ctx.storage.setAlarm(Date.now() + CLEANUP_DELAY_MS);
    this.#executing = true;
    try {
      const result = await this.#extract(init, channel, record);
      record.status = "done";
      return result;
    } catch (error) {
      record.status = "failed";
      record.error = error instanceof KbError ? error.code : "ERR_INTERNAL";
      throw error;
    } finally {
      this.#executing = false;
      if (!this.#wiped) {
        record.finishedAt = Date.now();
        await this.ctx.storage.put("run", record);
        await this.ctx.storage.setAlarm(Date.now() + CLEANUP_DELAY_MS);
      }
    }
  }

  /** The run's record (tenant, document, counts), for the tenant's status view and for audits. */
  async record(): Promise<RunRecord | null> {
    return (await this.ctx.storage.get<RunRecord>("run")) ?? null;
  }

  /**
   * Crypto-shred of the run's tenant: the run's record goes now (not at the clean-up alarm), leaving the tombstone.
   * Idempotent. An attempt still executing here is cut off from its tenant already (keys destroyed); it writes its
   * record no more.
   */
  async wipe(): Promise<void> {
    this.#wiped = true;
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    await this.ctx.storage.put("spent", true);
  }

  /** Clean-up: the run's state goes; a tombstone stays so the object can never serve another ingest. */
  override async alarm(): Promise<void> {
    if (this.#executing) {
      // Still extracting (a very long run): look again later.
      await this.ctx.storage.setAlarm(Date.now() + CLEANUP_DELAY_MS);
      return;
    }
    await this.ctx.storage.deleteAll();
    await this.ctx.storage.put("spent", true);
  }

  async #extract(init: RunInit, channel: RunChannel, record: RunRecord): Promise<RunResult> {
    const segmenter = new Segmenter(kindFor(init.contentType));
    const stream = (await channel.readDocument()).pipeThrough(new TextDecoderStream());
    let batch: Segment[] = [];
    let bytes = 0;
    let flagged = 0;
    const flush = async () => {
      if (!batch.length) return;
      const ready = init.extractor === "model" ? await this.#refine(init, batch) : batch;
      flagged += ready.filter((segment) => segment.flags.length > 0).length;
      record.written += unwrap(await channel.writeSegments(ready, record.segments + batch.length));
      record.segments += batch.length;
      batch = [];
      if (this.#wiped) throw new KbError("ERR_TENANT_OFFBOARDED", "This tenant has been offboarded.");
      await this.ctx.storage.put("run", record);
      await channel.progress(record.segments, bytes);
    };
    for await (const text of stream) {
      bytes += text.length;
      for (const piece of slices(text, SEGMENT_SLICE)) {
        batch.push(...segmenter.push(piece));
        if (batch.length >= BATCH) await flush();
        await yieldToEventLoop();
      }
    }
    batch.push(...segmenter.finish());
    await flush();
    if (record.segments === 0) throw new KbError("ERR_INVALID_PARAMS", "the document has no extractable text");
    return { segments: record.segments, written: record.written, flagged };
  }

  async #refine(init: RunInit, segments: Segment[]): Promise<Segment[]> {
    const ai = this.env.AI as
      | (AiBinding & { run(model: string, input: unknown, options?: unknown): Promise<unknown> })
      | undefined;
    if (!ai) throw new KbError("ERR_CONFIG", "EXTRACTOR=model needs the AI binding");
    const out: Segment[] = [];
    for (const segment of segments) {
      out.push(
        ...(await refineWithModel(segment, {
          ai,
          model: this.env.EXTRACTION_MODEL || DEFAULT_EXTRACTION_MODEL,
          tenant: init.tenant,
          ...(this.env.AI_GATEWAY_ID ? { gatewayId: this.env.AI_GATEWAY_ID } : {}),
        })),
      );
    }
    return out;
  }
}

/** `text` in pieces of about `size` characters, never cutting a surrogate pair. */
export function* slices(text: string, size: number): Generator<string> {
  let start = 0;
  while (start < text.length) {
    let end = Math.min(start + size, text.length);
    const last = text.charCodeAt(end - 1);
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end++;
    yield text.slice(start, end);
    start = end;
  }
}
