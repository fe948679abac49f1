import { RpcTarget } from "cloudflare:workers";
import { KbError } from "../errors";
import { contentHash } from "../kb/embedding-cache";
import type { AtomInput } from "../kb/knowledge-base";
import { LIMITS } from "../kb/limits";
import type { TenantContext } from "../tenant/tenant-context";
import { type RpcResult, settle } from "../util/rpc-result";
import { yieldToEventLoop } from "../util/yield";
import type { RunChannel } from "./extraction-run";
import type { RunLedger } from "./run-ledger";
import type { Segment } from "./segmenter";

export const EXTRACTOR_VERSION = "segmenter-v2";

export function atomIdFor(documentId: string, position: number, text: string): string {
  const digest = contentHash(`${documentId}\0${position}\0${contentHash(text)}`);
  return `x-${digest.slice(0, 40)}`;
}

export function documentSource(documentId: string): string {
  return `doc:${documentId}`;
}

/**
 * The capability one attempt of one run gets (an RpcTarget living in the tenant object), bound to this tenant,
 * this run and this document: it decides atom ids (SHA-256 of document, position and content hash, so a retried
 * attempt rewrites the same atoms instead of duplicating them), provenance and source; the run object cannot write
 * anything else anywhere else. Each `kb.add` batch commits together with the run's ledger rows and counts.
 */
export class WriteBackChannel extends RpcTarget implements RunChannel {
  readonly #tenant: TenantContext;
  readonly #ledger: RunLedger;
  readonly #runId: string;
  readonly #documentId: string;
  readonly #onProgress: (segments: number, bytes: number) => Promise<void>;

  constructor(
    tenant: TenantContext,
    ledger: RunLedger,
    runId: string,
    documentId: string,
    onProgress: (segments: number, bytes: number) => Promise<void>,
  ) {
    super();
    this.#tenant = tenant;
    this.#ledger = ledger;
    this.#runId = runId;
    this.#documentId = documentId;
    this.#onProgress = onProgress;
  }

  async readDocument(): Promise<ReadableStream<Uint8Array>> {
    const got = await this.#tenant.blobs.get(this.#documentId);
    if (!got) throw new KbError("ERR_NOT_FOUND", "document not found");
    return got.body;
  }

  /**
   * Stores the atoms of some segments. `segmentsDone` is how many source segments this attempt has handed back
   * once these are stored (counted with the last sub-batch, in its transaction). Returns the atoms written.
   */
  async writeSegments(segments: Segment[], segmentsDone: number): Promise<RpcResult<number>> {
    // A refusal (the atom quota, an injected fault) travels back to the run object as a value (rpc-result.ts).
    return settle(() => this.#writeSegments(segments, segmentsDone));
  }

  async #writeSegments(segments: Segment[], segmentsDone: number): Promise<number> {
    const atoms: AtomInput[] = segments.slice(0, 1000).map((segment) => ({
      id: atomIdFor(this.#documentId, segment.position, segment.text),
      text: segment.text,
      ...(segment.title ? { title: segment.title.slice(0, LIMITS.titleChars) } : {}),
      source: documentSource(this.#documentId),
      tags: ["extracted"],
      flags: segment.flags,
      provenance: {
        document: this.#documentId,
        run: this.#runId,
        contentHash: contentHash(segment.text),
        extractor: EXTRACTOR_VERSION,
        position: segment.position,
      },
    }));
    const flagged = new Set(atoms.filter((atom) => (atom.flags?.length ?? 0) > 0).map((atom) => atom.id as string));
    let written = 0;
    for (let i = 0; i < atoms.length; i += LIMITS.batchSize) {
      if (i > 0) await yieldToEventLoop();
      const last = i + LIMITS.batchSize >= atoms.length;
      const result = await this.#tenant.kb.add(atoms.slice(i, i + LIMITS.batchSize), Date.now(), (committed) =>
        this.#ledger.recordBatch(this.#runId, committed, flagged, last ? segmentsDone : null),
      );
      written += result.added.length + result.replaced.length;
    }
    return written;
  }

  async progress(segments: number, bytes: number): Promise<void> {
    await this.#onProgress(segments, bytes);
  }
}
