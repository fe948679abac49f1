import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import { KbError } from "../../src/errors";
import { RESUME_AFTER_MS, RunManager } from "../../src/extract/run-manager";
import { RUN_META_KEY } from "../../src/mcp/tools/extraction-tools";
import { MODERN_VERSION } from "../helpers/clients";
import { docClient, putOk, tenantStub } from "../helpers/docs";
import { kbCaller, uniqueTenant } from "../helpers/kb-client";
import { mcpFetch } from "../helpers/mcp-http";
import { mintToken } from "../helpers/tokens";
import { driveUntilSettled, expectedAtomIds, expectNoDuplicates, runRows, sleep, storedAtomIds } from "./helpers";

/**
 * A synchronous ingest's run handle reaches the client before any work (first progress notification) and in any
 * error result, and a synchronous ingest whose tenant object dies mid-run is resumed by the object's alarm, armed
 * before the run started, to exactly the atoms of a clean run.
 */

const TYPE = "text/markdown";

function ingestRequest(token: string, id: number, args: Record<string, unknown>, progressToken?: string) {
  const params = {
    name: "ingest_document",
    arguments: args,
    _meta: {
      ...(progressToken ? { progressToken } : {}),
      "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
      "io.modelcontextprotocol/clientInfo": { name: "run-handle-test", version: "0" },
      "io.modelcontextprotocol/clientCapabilities": {},
    },
  };
  return mcpFetch({
    method: "POST",
    token,
    headers: { "mcp-method": "tools/call", "mcp-name": "ingest_document", "mcp-protocol-version": MODERN_VERSION },
    body: JSON.stringify({ jsonrpc: "2.0", id, method: "tools/call", params }),
  });
}

interface Message {
  method?: string;
  id?: number;
  params?: { progressToken?: string; progress?: number; message?: string; _meta?: Record<string, unknown> };
  result?: { structuredContent?: Record<string, unknown>; isError?: boolean };
}

function sseMessages(text: string): Message[] {
  return text
    .split("\n")
    .filter((line) => line.startsWith("data:"))
    .map((line) => JSON.parse(line.slice(5)) as Message);
}

function paragraphs(count: number): string {
  return Array.from(
    { length: count },
    (_, i) => `Paragraph ${i} about quays, cranes and the tides; reading ${i * 3} was logged at berth ${i % 41}.`,
  ).join("\n\n");
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe("the run handle of a synchronous ingest", () => {
  it("is in the first progress notification, sent before any segment, and equals the result's handle", async () => {
    const tenant = uniqueTenant("handle-progress");
    await putOk(await docClient(tenant), "doc", new TextEncoder().encode(paragraphs(200)), TYPE);
    const response = await ingestRequest(await mintToken({ tenant }), 3, { document_id: "doc" }, "p-7");
    expect(response.status).toBe(200);
    const messages = sseMessages(await response.text());
    const progress = messages.filter((message) => message.method === "notifications/progress");
    const result = messages.find((message) => message.id === 3)?.result?.structuredContent;
    expect(result?.status).toBe("done");
    const handle = result?.run as string;
    expect(typeof handle).toBe("string");
    const [first, ...rest] = progress;
    expect(first?.params).toMatchObject({ progressToken: "p-7", progress: 0 });
    expect(first?.params?.message).toContain(handle);
    expect(first?.params?._meta?.[RUN_META_KEY]).toBe(handle);
    expect(rest.length).toBeGreaterThan(0);
    expect(rest.every((message) => message.params?._meta?.[RUN_META_KEY] === handle)).toBe(true);
    expect(messages.indexOf(first as Message)).toBe(0);
  });

  it("is in an ingest_document error result, and can be polled with ingest_status", async () => {
    const tenant = uniqueTenant("handle-error");
    const caller = await kbCaller(tenant);
    await putOk(await docClient(tenant), "doc", new TextEncoder().encode(paragraphs(20)), TYPE);
    vi.spyOn(RunManager.prototype, "run").mockRejectedValueOnce(new KbError("ERR_LIMIT", "injected"));
    const result = await caller.call("ingest_document", { document_id: "doc" });
    expect(result.isError).toBe(true);
    const content = result.structuredContent as { error: { code: string }; run?: string };
    expect(content.error.code).toBe("ERR_LIMIT");
    expect(typeof content.run).toBe("string");
    expect(result.content?.[0]?.text).toContain(content.run as string);
    const status = await caller.ok<{ status: string; document_id: string }>("ingest_status", { run: content.run });
    expect(status).toMatchObject({ status: "queued", document_id: "doc" });
  });

  it("an error before any run exists (unknown document) carries no handle and keeps its code", async () => {
    const caller = await kbCaller(uniqueTenant("handle-none"));
    const result = await caller.call("ingest_document", { document_id: "missing" });
    expect(result.isError).toBe(true);
    expect(result.structuredContent).toEqual({ error: { code: "ERR_NOT_FOUND", message: "document not found" } });
  });
});

describe("a synchronous ingest whose tenant object dies mid-run", () => {
  it("is resumed by the alarm armed before it started, to exactly the clean run's atoms", async () => {
    const tenant = uniqueTenant("sync-crash");
    const text = paragraphs(6000);
    await putOk(await docClient(tenant), "big", new TextEncoder().encode(text), TYPE);
    const expected = expectedAtomIds("big", text, TYPE);
    const stub = tenantStub(tenant);
    await runInDurableObject(stub, (_instance, state) => state.storage.deleteAlarm());
    const call = ingestRequest(await mintToken({ tenant }), 5, { document_id: "big" }, "p-crash")
      .then((response) => response.text())
      .catch((error: unknown) => `failed: ${String(error)}`);
    // Watch the run from outside (the object keeps serving other requests while it ingests: it yields).
    let seen: { written: number; alarm: number | null; at: number } | null = null;
    for (let i = 0; i < 2000 && !seen; i++) {
      seen = await runInDurableObject(stub, async (_instance, state) => {
        const row = state.storage.sql
          .exec<{ written: number; status: string }>(`SELECT written, status FROM extraction_runs`)
          .toArray()[0];
        if (!row || row.written === 0 || row.status !== "running") return null;
        return { written: row.written, alarm: await state.storage.getAlarm(), at: Date.now() };
      });
      if (!seen) await sleep(5);
    }
    expect(seen, "the run was never seen mid-way").not.toBeNull();
    expect(seen?.written).toBeLessThan(expected.length);
    expect(seen?.alarm).not.toBeNull();
    expect(seen?.alarm as number).toBeLessThanOrEqual((seen?.at as number) + RESUME_AFTER_MS);
    // Hard interruption of the tenant object (as a crash would be).
    await runInDurableObject(stub, (_instance, state) => state.abort("test: tenant object killed")).catch(
      () => undefined,
    );
    await call;
    // A stub to an aborted object stays broken: every look from here on uses a new one.
    const [cut] = await runRows(tenant);
    expect(cut?.status).toBe("running");
    const alarm = await runInDurableObject(tenantStub(tenant), (_instance, state) => state.storage.getAlarm());
    expect(alarm).not.toBeNull();
    expect(await runDurableObjectAlarm(tenantStub(tenant))).toBe(true);
    await driveUntilSettled([tenant]);
    const [row] = await runRows(tenant);
    expect(row).toMatchObject({ status: "done", error: null, written: expected.length, segments: expected.length });
    expect(row?.attempt).toBeGreaterThanOrEqual(2);
    const stored = (await storedAtomIds(tenant)).map((atom) => atom.id);
    expectNoDuplicates(stored);
    expect(stored.sort()).toEqual([...expected].sort());
  }, 120_000);
});
