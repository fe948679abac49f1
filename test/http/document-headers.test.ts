import { describe, expect, it } from "vitest";
import { DOCUMENT_CSP, documentSecurityHeaders, SAFE_INLINE_TYPES } from "../../src/blob/response-headers";
import { docClient, equalBytes, putOk } from "../helpers/docs";

/**
 * Issue 11 item 10: documents are served as their stored Content-Type (the uploader's choice), so every GET and
 * HEAD answer carries nosniff, a restrictive CSP, and `attachment` unless the type is on the safe inline list.
 */
const unique = (label: string) => `dh-${label}-${crypto.randomUUID().slice(0, 8)}`;
const body = new TextEncoder().encode("<html><script>alert(document.domain)</script></html>");

function expectLocked(headers: Headers, disposition: "inline" | "attachment"): void {
  expect(headers.get("x-content-type-options")).toBe("nosniff");
  expect(headers.get("content-security-policy")).toBe(DOCUMENT_CSP);
  expect(headers.get("content-disposition")).toBe(disposition);
  expect(headers.get("cache-control")).toBe("no-store");
}

describe("document responses", () => {
  const cases: [string, "inline" | "attachment"][] = [
    ["text/html", "attachment"],
    ["text/html; charset=utf-8", "attachment"],
    ["image/svg+xml", "attachment"],
    ["application/xhtml+xml", "attachment"],
    ["text/xml", "attachment"],
    ["application/pdf", "attachment"],
    ["application/octet-stream", "attachment"],
    ["application/x-unknown", "attachment"],
    ["Text/Plain; charset=utf-8", "inline"],
    ["application/json", "inline"],
    ["image/png", "inline"],
  ];

  it.each(cases)("stored as %s: GET, HEAD and a range are served with nosniff, CSP and %s", async (type, want) => {
    const client = await docClient(unique("t"));
    await putOk(client, "doc", body, type);
    const whole = await client.get("doc");
    expect(whole.status).toBe(200);
    expect(whole.headers.get("content-type")).toBe(type);
    expectLocked(whole.headers, want);
    // Bodies are read to the end (a cancelled body makes workerd log the aborted pipe).
    expect(equalBytes(new Uint8Array(await whole.arrayBuffer()), body)).toBe(true);
    const part = await client.get("doc", "bytes=0-3");
    expect(part.status).toBe(206);
    expectLocked(part.headers, want);
    expect(equalBytes(new Uint8Array(await part.arrayBuffer()), body.subarray(0, 4))).toBe(true);
    const head = await client.request("doc", { method: "HEAD" });
    expect(head.status).toBe(200);
    expectLocked(head.headers, want);
  });

  it("the safe list holds no type a browser executes or renders as markup", () => {
    for (const type of SAFE_INLINE_TYPES) expect(type).not.toMatch(/html|xml|svg|javascript|ecmascript|pdf/);
    expect(documentSecurityHeaders(" IMAGE/SVG+XML ")["content-disposition"]).toBe("attachment");
    expect(documentSecurityHeaders("")["content-disposition"]).toBe("attachment");
  });
});
