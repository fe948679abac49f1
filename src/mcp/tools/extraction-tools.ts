import type { McpServer, ServerContext } from "@modelcontextprotocol/server";
import { z } from "zod";
import { KbError } from "../../errors";
import type { RunManager } from "../../extract/run-manager";
import type { KnowledgeBase } from "../../kb/knowledge-base";
import type { RequestScope } from "../request-scope";
import { toolRunner } from "./tool-result";

const RUN_HANDLE = "extraction.run";
const RUN_HANDLE_TTL_S = 7 * 24 * 3600;
/** `_meta` key of ingest progress notifications that carries the run handle. */
export const RUN_META_KEY = "tenant-mcp-kb/run";

export interface ExtractionDeps {
  readonly runs: RunManager;
  readonly kb: KnowledgeBase;
  /** Queues a run for the tenant object's alarm (asynchronous ingest). */
  readonly schedule: () => Promise<void>;
}

/**
 * ingest_document (synchronous with progress notifications, or queued with a run handle), ingest_status (the run
 * handle is bound to tenant and subject), purge_source (remove every atom of one source, e.g. a poisoned document).
 */
export function registerExtractionTools(server: McpServer, scope: RequestScope, deps: ExtractionDeps): void {
  const run = toolRunner(scope);

  server.registerTool(
    "ingest_document",
    {
      title: "Ingest document",
      description:
        "Extracts atoms from a stored document in a fresh, single-tenant run. wait=true (default) streams progress and returns the result; wait=false returns a run handle for ingest_status.",
      inputSchema: z.object({ document_id: z.string().max(64), wait: z.boolean().optional() }).strict(),
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    async ({ document_id, wait }, ctx: ServerContext) => {
      // Minted before the run starts; from then on every answer carries it (first progress notification, result,
      // error result), so a client whose connection or call fails can still poll ingest_status.
      let handle: string | null = null;
      return run(
        "ingest_document",
        async () => {
          const runId = deps.runs.create(scope.identity.subject, document_id);
          handle = await scope.handles.mint(RUN_HANDLE, { runId }, RUN_HANDLE_TTL_S);
          if (wait === false) {
            await deps.schedule();
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
          const status = await deps.runs.run(runId, (segments) => notify(segments, `${segments} segments`));
          return { run: handle, ...publicStatus(status) };
        },
        () => (handle ? { run: handle } : {}),
      )();
    },
  );

  server.registerTool(
    "ingest_status",
    {
      title: "Ingest status",
      description: "Status of an extraction run, by the handle ingest_document returned.",
      inputSchema: z.object({ run: z.string().max(4096) }).strict(),
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    async ({ run: handle }) =>
      run("ingest_status", async () => {
        const opened = await scope.handles.open<{ runId: string }>(RUN_HANDLE, handle);
        const status =
          opened && typeof opened.runId === "string" ? deps.runs.status(opened.runId, scope.identity.subject) : null;
        if (!status) throw new KbError("ERR_NOT_FOUND", "unknown or expired run");
        return publicStatus(status);
      })(),
  );

  server.registerTool(
    "purge_source",
    {
      title: "Purge source",
      description:
        'Removes every atom whose source is the given value (atoms extracted from document X have source "doc:X").',
      inputSchema: z.object({ source: z.string().max(512) }).strict(),
      annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    },
    async ({ source }) => run("purge_source", async () => ({ source, removed: await deps.kb.purgeSource(source) }))(),
  );
}

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
