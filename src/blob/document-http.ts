import type { Identity } from "../auth/identity";
import { DOCUMENT_METHODS } from "../config";
import { InsufficientScopeError, KbError, MethodNotAllowedError } from "../errors";
import type { TenantContext } from "../tenant/tenant-context";
import { type RangeRequest, resolveRange } from "./ranges";
import { documentSecurityHeaders } from "./response-headers";

/**
 * The streaming document endpoint, inside the tenant object: PUT (Content-Length required; the body is encrypted
 * as it streams), GET (whole, decrypting as it streams; or one `Range: bytes=` range, decrypting only the chunks
 * it needs), DELETE. The id is validated by EncryptedBlobs; the tenant is the object's own.
 */
export async function serveDocumentRequest(
  request: Request,
  identity: Identity,
  tenant: TenantContext,
  id: string,
): Promise<Response> {
  const need = request.method === "GET" || request.method === "HEAD" ? "kb.read" : "kb.write";
  if (!identity.scopes.includes(need)) throw new InsufficientScopeError([need]);
  const blobs = tenant.blobs;
  switch (request.method) {
    case "PUT": {
      const declared = request.headers.get("content-length");
      if (declared === null || !/^\d+$/.test(declared)) {
        throw new KbError("ERR_LENGTH_REQUIRED", "Length Required: send Content-Length");
      }
      const body = request.body ?? new ReadableStream<Uint8Array>({ start: (c) => c.close() });
      const meta = await blobs.put(
        id,
        body,
        Number(declared),
        request.headers.get("content-type") ?? "application/octet-stream",
      );
      return Response.json({ document: meta }, { status: 201, headers: { "cache-control": "no-store" } });
    }
    case "GET":
    case "HEAD": {
      const meta = blobs.head(id);
      if (!meta) throw new KbError("ERR_NOT_FOUND", "document not found");
      const range = parseRange(request.headers.get("range"));
      const headers = new Headers({
        "content-type": meta.contentType,
        "cache-control": "no-store",
        "accept-ranges": "bytes",
        etag: `"${meta.id}-${Date.parse(meta.updatedAt)}"`,
        ...documentSecurityHeaders(meta.contentType),
      });
      if (request.method === "HEAD") {
        headers.set("content-length", String(meta.size));
        return new Response(null, { status: 200, headers });
      }
      if (range) resolveRange(range, meta.size); // 416 before any I/O
      const got = await blobs.get(id, range ?? undefined);
      if (!got) throw new KbError("ERR_NOT_FOUND", "document not found");
      if (got.range) {
        headers.set("content-range", `bytes ${got.range.start}-${got.range.end - 1}/${meta.size}`);
        headers.set("content-length", String(got.range.end - got.range.start));
        return new Response(got.body, { status: 206, headers });
      }
      return new Response(got.body, { status: 200, headers });
    }
    case "DELETE": {
      if (!(await blobs.delete(id))) throw new KbError("ERR_NOT_FOUND", "document not found");
      return new Response(null, { status: 204 });
    }
    default:
      throw new MethodNotAllowedError(DOCUMENT_METHODS);
  }
}

/** One `bytes=` range (a-b, a-, -n); multiple ranges are refused (416) rather than served partially. */
export function parseRange(header: string | null): RangeRequest | null {
  if (header === null) return null;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === "" && match[2] === "")) throw new KbError("ERR_RANGE", "Range Not Satisfiable");
  const [, first, last] = match as unknown as [string, string, string];
  // RFC 9110 14.1.2: a last-byte-pos past the end, or a suffix longer than the representation, means "to the end";
  // numbers too large to be exact are clamped so they keep that meaning (a first-byte-pos that large stays 416).
  const clamped = (digits: string) => Math.min(Number(digits), Number.MAX_SAFE_INTEGER);
  if (first === "") return { suffix: clamped(last) };
  const offset = Number(first);
  if (last === "") return { offset };
  const end = clamped(last);
  if (end < offset) throw new KbError("ERR_RANGE", "Range Not Satisfiable");
  return { offset, length: Math.min(end - offset + 1, Number.MAX_SAFE_INTEGER) };
}
