import { z } from "zod";
import { KbError } from "../../errors";
import { base64url } from "../../util/bytes";
import { defineTool } from "./tool-declaration";

/** Documents over MCP are for small bodies; large ones use the streaming HTTP endpoint /v1/documents/:id. */
export const MCP_DOCUMENT_MAX_BYTES = 512 * 1024;

const putDocument = defineTool({
  name: "put_document",
  scope: "kb.write",
  title: "Put document",
  description: `Stores a document (encrypted at rest), given as text or base64, at most ${MCP_DOCUMENT_MAX_BYTES} bytes. Larger documents: PUT /v1/documents/{id}.`,
  input: z
    .object({
      id: z.string().max(64),
      text: z.string().optional(),
      base64: z.string().optional(),
      content_type: z.string().max(160).optional(),
    })
    .strict(),
  annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
  run: async ({ id, text, base64, content_type }, { tenant: { blobs } }) => {
    if ((text === undefined) === (base64 === undefined)) {
      throw new KbError("ERR_INVALID_PARAMS", "give exactly one of text or base64");
    }
    const bytes = text !== undefined ? new TextEncoder().encode(text) : decodeBase64(base64 as string);
    if (bytes.byteLength > MCP_DOCUMENT_MAX_BYTES) {
      throw new KbError("ERR_LIMIT", `documents over MCP are at most ${MCP_DOCUMENT_MAX_BYTES} bytes`);
    }
    const type = content_type ?? (text !== undefined ? "text/plain; charset=utf-8" : "application/octet-stream");
    return { document: await blobs.put(id, bytes, bytes.byteLength, type) };
  },
});

const getDocument = defineTool({
  name: "get_document",
  scope: "kb.read",
  title: "Get document",
  description: `Reads a document, or a byte range of it (offset, length), at most ${MCP_DOCUMENT_MAX_BYTES} bytes per call. Text documents come back as text, others as base64.`,
  input: z
    .object({
      id: z.string().max(64),
      offset: z.number().int().min(0).optional(),
      length: z.number().int().min(1).max(MCP_DOCUMENT_MAX_BYTES).optional(),
    })
    .strict(),
  annotations: { readOnlyHint: true, openWorldHint: false },
  run: async ({ id, offset, length }, { tenant: { blobs } }) => {
    const meta = blobs.head(id);
    if (!meta) throw new KbError("ERR_NOT_FOUND", "document not found");
    const wanted = length ?? Math.min(meta.size - (offset ?? 0), MCP_DOCUMENT_MAX_BYTES);
    if (offset === undefined && length === undefined && meta.size > MCP_DOCUMENT_MAX_BYTES) {
      throw new KbError("ERR_LIMIT", "document too large for one call: pass offset and length");
    }
    const got =
      meta.size === 0 ? await blobs.get(id) : await blobs.get(id, { offset: offset ?? 0, length: Math.max(wanted, 1) });
    if (!got) throw new KbError("ERR_NOT_FOUND", "document not found");
    const bytes = new Uint8Array(await new Response(got.body).arrayBuffer());
    const isText = /^text\/|json|xml|markdown/i.test(meta.contentType);
    const text = isText ? new TextDecoder().decode(bytes) : null;
    return {
      document: meta,
      range: got.range,
      ...(text !== null ? { text } : { base64: base64url(bytes) }),
    };
  },
});

export const DOCUMENT_TOOLS = [putDocument, getDocument] as const;

function decodeBase64(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(clean)) throw new KbError("ERR_INVALID_PARAMS", "base64 is not valid");
  try {
    const binary = atob(clean.replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(binary, (char) => char.charCodeAt(0));
  } catch {
    throw new KbError("ERR_INVALID_PARAMS", "base64 is not valid");
  }
}
