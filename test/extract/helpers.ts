import { listDurableObjectIds, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { expect } from "vitest";
import type { RunRecord } from "../../src/extract/extraction-run";
import { atomIdFor } from "../../src/extract/run-manager";
import { kindFor, type Segment, Segmenter } from "../../src/extract/segmenter";
import { tenantStub } from "../helpers/docs";
import type { KbCaller } from "../helpers/kb-client";

/**
 * Helpers for the extraction tests: a tenant's extraction_runs rows and atom ids read straight from its object's
 * SQLite, ExtractionRun stubs and records, alarm driving, and the segmentation a document should produce.
 */

export interface RunRow {
  readonly tenant: string;
  readonly runId: string;
  readonly subject: string;
  readonly documentId: string;
  readonly objectIds: string[];
  readonly status: string;
  readonly attempt: number;
  readonly segments: number;
  readonly written: number;
  readonly flagged: number;
  readonly error: string | null;
}

export async function runRows(tenant: string): Promise<RunRow[]> {
  const raw = await runInDurableObject(tenantStub(tenant), (_instance, state) =>
    state.storage.sql
      .exec<Record<string, SqlStorageValue>>(`SELECT * FROM extraction_runs ORDER BY created_at, run_id`)
      .toArray()
      .map((row) => ({ ...row })),
  );
  return raw.map((row) => ({
    tenant: String(row.tenant),
    runId: String(row.run_id),
    subject: String(row.subject),
    documentId: String(row.document_id),
    objectIds: JSON.parse(String(row.object_ids)) as string[],
    status: String(row.status),
    attempt: Number(row.attempt),
    segments: Number(row.segments),
    written: Number(row.written),
    flagged: Number(row.flagged),
    error: row.error === null ? null : String(row.error),
  }));
}

/** Atom ids of a tenant, read from its object's SQLite (every row, whatever its tenant column says). */
export async function storedAtomIds(tenant: string): Promise<{ tenant: string; id: string }[]> {
  return runInDurableObject(tenantStub(tenant), (_instance, state) =>
    state.storage.sql
      .exec<{ tenant: string; id: string }>(`SELECT tenant, id FROM atoms ORDER BY seq`)
      .toArray()
      .map((row) => ({ tenant: row.tenant, id: row.id })),
  );
}

export const runStub = (objectId: string) => env.EXTRACTION_RUN.get(env.EXTRACTION_RUN.idFromString(objectId));

export async function runRecord(objectId: string): Promise<RunRecord | null> {
  return runInDurableObject(
    runStub(objectId),
    async (_instance, state) => (await state.storage.get<RunRecord>("run")) ?? null,
  );
}

export async function allRunObjectIds(): Promise<string[]> {
  return (await listDurableObjectIds(env.EXTRACTION_RUN)).map((id) => id.toString());
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Drives the tenants' alarms (runDurableObjectAlarm) until none of their runs is queued or running. The runtime
 * may also fire the alarm by itself (it is set to "now"), so "no alarm to run" is not "nothing pending": the loop
 * reads the rows each round. Returns how many alarm invocations this loop ran.
 */
export async function driveUntilSettled(tenants: readonly string[], timeoutMs = 60_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let ran = 0;
  for (;;) {
    for (const tenant of tenants) if (await runDurableObjectAlarm(tenantStub(tenant))) ran++;
    const pending = (await Promise.all(tenants.map(runRows)))
      .flat()
      .filter((row) => row.status === "queued" || row.status === "running");
    if (pending.length === 0) return ran;
    if (Date.now() > deadline) throw new Error(`runs still pending: ${JSON.stringify(pending)}`);
    await sleep(20);
  }
}

/** The segments a document should produce: the segmenter fed the whole text at once. */
export function segmentsOf(text: string, contentType: string): Segment[] {
  const segmenter = new Segmenter(kindFor(contentType));
  return [...segmenter.push(text), ...segmenter.finish()];
}

export function expectedAtomIds(documentId: string, text: string, contentType: string): string[] {
  return segmentsOf(text, contentType).map((segment) => atomIdFor(documentId, segment.position, segment.text));
}

export interface ListedAtom {
  readonly id: string;
  readonly title: string | null;
  readonly source: string | null;
  readonly tags: string[];
  readonly flags: string[];
  readonly provenance: {
    document: string;
    run: string;
    contentHash: string;
    extractor: string;
    position: number;
  } | null;
}

/** Every atom of the caller's tenant through list_atoms, following cursors. */
export async function listAll(caller: KbCaller): Promise<ListedAtom[]> {
  const out: ListedAtom[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 1000; page++) {
    const got = await caller.ok<{ atoms: ListedAtom[]; next_cursor: string | null }>("list_atoms", {
      limit: 100,
      ...(cursor ? { cursor } : {}),
    });
    out.push(...got.atoms);
    if (!got.next_cursor) return out;
    cursor = got.next_cursor;
  }
  throw new Error("list_atoms did not end");
}

export async function atomCount(caller: KbCaller): Promise<number> {
  return (await caller.ok<{ atoms: number }>("kb_stats", {})).atoms;
}

export interface Hit {
  readonly id: string;
  readonly text: string;
  readonly title: string | null;
  readonly source: string | null;
  readonly flags: string[];
  readonly provenance: ListedAtom["provenance"];
}

export async function search(caller: KbCaller, query: string, topK = 50): Promise<Hit[]> {
  return (await caller.ok<{ results: Hit[] }>("search", { query, top_k: topK })).results;
}

export function expectNoDuplicates(ids: readonly string[]): void {
  expect(new Set(ids).size, "duplicate ids").toBe(ids.length);
}

/** A tool result refused with a stable code (isError + structuredContent.error.code). */
export function errorCode(result: { isError?: boolean; structuredContent?: Record<string, unknown> }): string | null {
  if (!result.isError) return null;
  const error = result.structuredContent?.error as { code?: unknown } | undefined;
  return typeof error?.code === "string" ? error.code : null;
}
