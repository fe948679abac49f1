import { z } from "zod";
import { tenantFetch } from "../../egress/tenant-fetch";
import { KbError } from "../../errors";
import { LIMITS } from "../../kb/limits";
import { sha256Hex } from "../../util/bytes";
import { defineTool } from "./tool-declaration";

const MEDIA_TYPE = /^\s*([a-z0-9!#$&^_.+-]{1,64}\/[a-z0-9!#$&^_.+-]{1,64})\s*(;|$)/i;
const CHARSET = /;\s*charset\s*=\s*"?([a-z0-9._-]{1,64})"?\s*(;|$)/i;

/**
 * The downstream Content-Type reduced to what the document store accepts: the media type and, if present, a plain
 * charset (other parameters and quoting are dropped); anything unparseable is stored as application/octet-stream.
 */
function storedContentType(header: string): string {
  const media = MEDIA_TYPE.exec(header)?.[1];
  if (!media) return "application/octet-stream";
  const charset = CHARSET.exec(header)?.[1];
  return charset ? `${media.toLowerCase()}; charset=${charset.toLowerCase()}` : media.toLowerCase();
}

/**
 * `import_url`: fetches a document through the tenant egress boundary (allow-listed origins only, exchanged token
 * for downstream resources, never the caller's token) and stores it as an encrypted tenant document.
 */
const importUrl = defineTool({
  name: "import_url",
  scope: "kb.write",
  title: "Import URL",
  description: (config) =>
    `Fetches a URL on this tenant's egress allow-list (https only, at most ${config.egressMaxBytes} bytes) and stores it as a document.`,
  input: z
    .object({ url: z.string().max(2048), id: z.string().max(64).optional(), ingest: z.boolean().optional() })
    .strict(),
  annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: true },
  run: async ({ url, id, ingest }, { scope, tenant, config }) => {
    const documentId = id ?? `url-${(await sha256Hex(url)).slice(0, 24)}`;
    if (!LIMITS.idPattern.test(documentId)) throw new KbError("ERR_INVALID_PARAMS", "invalid document id");
    const fetched = await tenantFetch(url, {
      policy: tenant.egressPolicy(),
      tokenFor: (target) => tenant.tokens(config).tokenFor(scope.identity, target),
      maxBytes: config.egressMaxBytes,
      timeoutMs: config.egressTimeoutMs,
    });
    const document = await tenant.blobs.put(
      documentId,
      fetched.body,
      fetched.body.byteLength,
      storedContentType(fetched.contentType),
    );
    // Optional: extract atoms right away, in a fresh single-tenant run.
    const runs = tenant.runs();
    const extraction = ingest ? await runs.run(runs.create(scope.identity.subject, document.id)) : null;
    return { document, source: fetched.url, ...(extraction ? { extraction } : {}) };
  },
});

export const IMPORT_TOOLS = [importUrl] as const;
