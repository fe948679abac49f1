import { z } from "zod";
import { KbError } from "../../errors";
import type { RunManager } from "../../extract/run-manager";
import { defineTool } from "./tool-declaration";

const RUN_HANDLE = "extraction.run";
const RUN_HANDLE_TTL_S = 7 * 24 * 3600;
/** `_meta` key of ingest progress notifications that carries the run handle. */
export const RUN_META_KEY = "tenant-mcp-kb/run";

/**
 * ingest_document (synchronous with progress notifications, or queued with a run handle), ingest_status (the run
 * handle is bound to tenant and subject), purge_source (remove every atom of one source, e.g. a poisoned document).
 */
const ingestDocument = defineTool({
  name: "ingest_document",
  scope: "kb.write",
  title: "Ingest document",
  description:
    "Extracts atoms from a stored document in a fresh, single-tenant run. wait=true (default) streams progress and returns the result; wait=false returns a run handle for ingest_status.",
  input: z.object({ document_id: z.string().max(64), wait: z.boolean().optional() }).strict(),
  annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
  run: async ({ document_id, wait }, call) => {
    const { scope, ctx } = call;
    const runs = call.tenant.runs();
    const runId = runs.create(scope.identity.subject, document_id);
    // Minted before the run starts; from then on every answer carries it (first progress notification,
    // result, error result), so a client whose connection or call fails can still poll ingest_status.
    const handle = await scope.handles.mint(RUN_HANDLE, { runId }, RUN_HANDLE_TTL_S);
    call.onFailureInclude({ run: handle });
    if (wait === false) {
      await call.schedule();
      return { run: handle, status: "queued" };
    }
    const token = ctx.mcpReq._meta?.progressToken;
    const notify = async (segments: number, message: string) => {
      if (token === undefined) return;
      await ctx.mcpReq
        .notify({
          method: "notifications/progress",
          params: { progressToken: token, progress: segments, message, _meta: { [RUN_META_KEY]: handle } },
        })
        .catch(() => undefined);
    };
    // Before any work: the handle reaches the client even if this object dies in the first batch.
    await notify(0, `run ${handle}: started`);
    const status = await runs.run(runId, (segments) => notify(segments, `${segments} segments`));
    return { run: handle, ...publicStatus(status) };
  },
});

const ingestStatus = defineTool({
  name: "ingest_status",
  scope: "kb.read",
  title: "Ingest status",
  description: "Status of an extraction run, by the handle ingest_document returned.",
  input: z.object({ run: z.string().max(4096) }).strict(),
  annotations: { readOnlyHint: true, openWorldHint: false },
  run: async ({ run: handle }, { scope, tenant }) => {
    const opened = await scope.handles.open<{ runId: string }>(RUN_HANDLE, handle);
    const status =
      opened && typeof opened.runId === "string" ? tenant.runs().status(opened.runId, scope.identity.subject) : null;
    if (!status) throw new KbError("ERR_NOT_FOUND", "unknown or expired run");
    return publicStatus(status);
  },
});

const purgeSource = defineTool({
  name: "purge_source",
  scope: "kb.write",
  title: "Purge source",
  description:
    'Removes every atom whose source is the given value (atoms extracted from document X have source "doc:X").',
  input: z.object({ source: z.string().max(512) }).strict(),
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
  run: async ({ source }, { tenant }) => ({ source, removed: await tenant.kb.purgeSource(source) }),
});

export const EXTRACTION_TOOLS = [ingestDocument, ingestStatus, purgeSource] as const;

function publicStatus(status: ReturnType<RunManager["status"]> & object): Record<string, unknown> {
  return {
    status: status.status,
    document_id: status.documentId,
    attempts: status.attempt,
    segments: status.segments,
    atoms_written: status.written,
    flagged: status.flagged,
    error: status.error,
  };
}
