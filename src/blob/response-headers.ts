/**
 * Security headers of a served tenant document (pure; issue 11 item 10). A document is served with the
 * Content-Type its uploader stored, which a hostile tenant member controls, so the response must never become an
 * active page on this server's origin:
 *   - `x-content-type-options: nosniff`: the browser uses the stored type, never a sniffed one;
 *   - `content-disposition: attachment` unless the type's essence is on SAFE_INLINE_TYPES (types browsers show as
 *     inert text or images: no script, no markup, no plugins); anything else (text/html, image/svg+xml, XML,
 *     application/pdf, unknown types) is a download;
 *   - `content-security-policy: default-src 'none'; sandbox; frame-ancestors 'none'`: even if rendered, nothing
 *     loads, no script runs, the document gets an opaque origin and cannot be framed.
 */
export const SAFE_INLINE_TYPES: readonly string[] = [
  "text/plain",
  "text/csv",
  "text/markdown",
  "application/json",
  "image/png",
  "image/jpeg",
  "image/gif",
  "image/webp",
];

export const DOCUMENT_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'";

/** The media type without parameters, lower-cased ("Text/Plain; charset=utf-8" -> "text/plain"). */
export function mediaTypeEssence(contentType: string): string {
  return (contentType.split(";")[0] ?? "").trim().toLowerCase();
}

export function documentSecurityHeaders(contentType: string): Record<string, string> {
  return {
    "x-content-type-options": "nosniff",
    "content-disposition": SAFE_INLINE_TYPES.includes(mediaTypeEssence(contentType)) ? "inline" : "attachment",
    "content-security-policy": DOCUMENT_CSP,
  };
}
