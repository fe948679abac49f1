import { describe, expect, it } from "vitest";
import { DEFAULT_SEGMENTER, MAX_JSON_CHARS } from "../../src/extract/segmenter";
import { docClient, putOk } from "../helpers/docs";
import { inTenantObject } from "../helpers/in-object";
import { type KbCaller, kbCaller, uniqueTenant } from "../helpers/kb-client";
import {
  atomCount,
  driveUntilSettled,
  errorCode,
  listAll,
  runRows,
  search,
  segmentsOf,
  storedAtomIds,
} from "./helpers";

/**
 * Documents the extractor cannot or should not turn into atoms fail with a clear, stable error code and write
 * nothing; malformed HTML still gives clean text; a 10 MiB document streams through with bounded segments.
 */

interface Outcome {
  /** The stable error code, from a refused tool call or from the failed run's status. */
  readonly code: string | null;
  /** Attempts the run took (0 when the tool refused before creating a run). */
  readonly attempts: number;
  readonly status: string | null;
}

/** Ingests synchronously or through the alarm, and reports how it ended. */
async function ingestOutcome(caller: KbCaller, documentId: string, wait: boolean): Promise<Outcome> {
  const result = await caller.call("ingest_document", { document_id: documentId, wait });
  const refused = errorCode(result);
  if (refused) return { code: refused, attempts: 0, status: null };
  expect(result.isError, result.raw).toBeFalsy();
  let status = result.structuredContent as { status: string; error: string | null; attempts: number; run: string };
  if (!wait) {
    await driveUntilSettled([caller.tenant]);
    status = { ...status, ...(await caller.ok<typeof status>("ingest_status", { run: status.run })) };
  }
  return { code: status.error, attempts: status.attempts, status: status.status };
}

/** A content error is final: one attempt at most (not retried in fresh objects), reported with its own code. */
function expectFinalError(outcome: Outcome, code: string): void {
  expect(outcome.code, JSON.stringify(outcome)).toBe(code);
  expect(outcome.attempts, JSON.stringify(outcome)).toBeLessThanOrEqual(1);
  if (outcome.status !== null) expect(outcome.status).toBe("failed");
}

async function expectNothingWritten(caller: KbCaller, expectedCount = 0): Promise<void> {
  expect(await atomCount(caller)).toBe(expectedCount);
  expect((await runRows(caller.tenant)).filter((row) => row.written > 0 && row.status !== "done")).toEqual([]);
}

describe("unsupported and empty documents", () => {
  it.each([
    ["image/png", "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="],
    ["application/octet-stream", "AAECAwQFBgcICQ=="],
    ["application/pdf", "JVBERi0xLjQKJcOkw7zDtsOfCg=="],
  ])("%s → ERR_UNSUPPORTED_TYPE, sync and async, nothing written", async (type, base64) => {
    const caller = await kbCaller(uniqueTenant("bad-type"));
    await caller.ok("put_document", { id: "blob", base64, content_type: type });
    expectFinalError(await ingestOutcome(caller, "blob", true), "ERR_UNSUPPORTED_TYPE");
    expectFinalError(await ingestOutcome(caller, "blob", false), "ERR_UNSUPPORTED_TYPE");
    await expectNothingWritten(caller);
  });

  it("an empty (0-byte) document → ERR_INVALID_PARAMS, no run, nothing written", async () => {
    const caller = await kbCaller(uniqueTenant("bad-empty"));
    await caller.ok("put_document", { id: "empty", text: "", content_type: "text/markdown" });
    for (const wait of [true, false]) {
      const outcome = await ingestOutcome(caller, "empty", wait);
      expect(outcome).toEqual({ code: "ERR_INVALID_PARAMS", attempts: 0, status: null });
    }
    expect(await runRows(caller.tenant)).toEqual([]);
    await expectNothingWritten(caller);
  });

  it.each([
    ["text/markdown", "\n\n   \n\t\n"],
    ["text/plain", "    "],
    ["text/html", "<html><head><title>only a title</title></head><body><script>x()</script> </body></html>"],
    ["application/json", "{}"],
  ])("a %s document with no extractable text → ERR_INVALID_PARAMS, nothing written", async (type, text) => {
    const caller = await kbCaller(uniqueTenant("bad-blank"));
    await caller.ok("put_document", { id: "blank", text, content_type: type });
    expectFinalError(await ingestOutcome(caller, "blank", true), "ERR_INVALID_PARAMS");
    await expectNothingWritten(caller);
  });

  it("a document that does not exist → ERR_NOT_FOUND", async () => {
    const caller = await kbCaller(uniqueTenant("bad-missing"));
    expect(await ingestOutcome(caller, "nope", true)).toEqual({ code: "ERR_NOT_FOUND", attempts: 0, status: null });
    expect(await runRows(caller.tenant)).toEqual([]);
  });
});

describe("malformed HTML", () => {
  it("gives clean atoms: no tag text, no comments, no script or style content", async () => {
    const caller = await kbCaller(uniqueTenant("bad-html"));
    const html = [
      "<!DOCTYPE html><html><head><style>body { color: red } .leak1 {}</style></head><body>",
      "<h1>Harbour <em>guide</h1>",
      "<p>Unclosed paragraph with <b>bold <i>and italic",
      "<div class='x' data-y=\"1\">Depth is 5 < 6 metres at low tide</div>",
      "<p>Boats: a < b<script>window.leak2 = document.cookie;</script> ferries</p>",
      "<p>Before comment <!-- <p>leak3</p> --> after comment.</p>",
      "<ul><li>one<li>two</ul></p></div></span>",
      "<p>Fish &amp; chips &lt;3 &#169; &unknown; &#x1F41F;</p>",
      "<SCRIPT type=module>leak4()</SCRIPT><noscript>leak5</noscript><template><p>leak6</p></template>",
      "<p>Last words before an unterminated comment <!-- leak7 <b>never closed",
    ].join("\n");
    await caller.ok("put_document", { id: "messy", text: html, content_type: "text/html" });
    const result = await caller.ok<{ status: string; segments: number }>("ingest_document", { document_id: "messy" });
    expect(result.status).toBe("done");
    const hits = await search(caller, "harbour guide unclosed paragraph boats ferries fish chips comment", 50);
    expect(hits.length).toBe(result.segments);
    const text = hits.map((hit) => hit.text).join("\n");
    for (const wanted of [
      "Harbour guide",
      "Unclosed paragraph with bold and italic",
      "Depth is 5 < 6 metres at low tide",
      "Boats: a < b",
      "ferries",
      "Before comment",
      "after comment.",
      "one",
      "two",
      "Fish & chips <3 © &unknown; 🐟",
      "Last words before an unterminated comment",
    ]) {
      expect(text, wanted).toContain(wanted);
    }
    expect(text).not.toMatch(/leak\d|color: red|document\.cookie|<!--|-->|<!DOCTYPE/i);
    expect(text).not.toMatch(/<\/?[a-z][a-z0-9]*[\s>/]|<\/?[a-z][a-z0-9]*$/im); // no tag, whole or cut
    for (const hit of hits) expect(hit.flags).not.toContain("hidden-html");
  });
});

describe("malformed JSON", () => {
  it("→ ERR_INVALID_PARAMS, and nothing is half-written (kb_stats and atoms unchanged)", async () => {
    const caller = await kbCaller(uniqueTenant("bad-json"));
    await caller.ok("put_document", {
      id: "good",
      text: JSON.stringify({ tide: "high at noon", ferry: { departs: "07:00" } }),
      content_type: "application/json",
    });
    await caller.ok("ingest_document", { document_id: "good" });
    const count = await atomCount(caller);
    const ids = (await listAll(caller)).map((atom) => atom.id);
    expect(count).toBe(2);

    // Truncated after many complete entries: a streaming writer would have written some of them.
    const entries = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`k${i}`, `value number ${i}`]));
    const truncated = JSON.stringify(entries).slice(0, -40);
    for (const [id, text] of [
      ["truncated", truncated],
      ["trailing-comma", '{"a": 1, "b": [1, 2,], }'],
      ["not-json", "tide: high\nferry: 07:00"],
      ["single-quotes", "{'a': 'b'}"],
    ] as const) {
      await caller.ok("put_document", { id, text, content_type: "application/json" });
      for (const wait of [true, false]) expectFinalError(await ingestOutcome(caller, id, wait), "ERR_INVALID_PARAMS");
    }
    expect(await atomCount(caller)).toBe(count);
    expect((await listAll(caller)).map((atom) => atom.id)).toEqual(ids);
    expect((await caller.ok<{ index: { vectors: number } }>("kb_stats", {})).index.vectors).toBe(count);
  });

  it("JSON over the 8 MiB cap → ERR_LIMIT, nothing written", async () => {
    const tenant = uniqueTenant("bad-json-big");
    const caller = await kbCaller(tenant);
    // Each item serializes to 55 characters ("…", with quotes and comma).
    const items = Array.from({ length: Math.ceil((MAX_JSON_CHARS + 65_536) / 55) }, (_, i) =>
      `item ${i} `.padEnd(52, "x"),
    );
    const bytes = new TextEncoder().encode(JSON.stringify(items));
    expect(bytes.byteLength).toBeGreaterThan(MAX_JSON_CHARS);
    await putOk(await docClient(tenant), "huge-json", bytes, "application/json");
    expectFinalError(await ingestOutcome(caller, "huge-json", true), "ERR_LIMIT");
    await expectNothingWritten(caller);
  }, 60_000);
});

describe("a 10 MiB markdown document", () => {
  const SIZE = 10 * 1024 * 1024;

  /** Sections of one-line paragraphs, some long paragraphs, and one 256 KiB line without a newline. */
  function document(): string {
    const parts: string[] = [];
    let size = 0;
    let i = 0;
    while (size < SIZE) {
      let part: string;
      if (i % 40 === 0) part = `# Section ${i / 40}\n`;
      else if (i % 97 === 0) part = Array.from({ length: 60 }, (_, k) => `Long sentence ${k} of ${i}.`).join(" ");
      else if (i === 5_001)
        part = Array.from({ length: 32_768 }, (_, k) => `w${k % 1000}`)
          .join(" ")
          .slice(0, 262_144);
      else part = `Paragraph ${i} on tides and ferries; reading ${i * 7} at pier ${i % 41}, calm sea.`;
      parts.push(part);
      size += part.length + 2;
      i++;
    }
    return parts.join("\n\n");
  }

  it("streams through: bounded segments, every atom at most maxChars + overlap", async () => {
    const tenant = uniqueTenant("bad-10mib");
    const caller = await kbCaller(tenant);
    const text = document();
    const bytes = new TextEncoder().encode(text);
    expect(bytes.byteLength).toBeGreaterThanOrEqual(SIZE);

    const putStart = Date.now();
    await putOk(await docClient(tenant), "big", bytes, "text/markdown");
    const putMs = Date.now() - putStart;
    const ingestStart = Date.now();
    const result = await caller.ok<{ status: string; segments: number; atoms_written: number }>("ingest_document", {
      document_id: "big",
    });
    const ingestMs = Date.now() - ingestStart;
    expect(result.status).toBe("done");

    // Segment count: at least size / maxChars (no segment is longer), and within 2x of the whole-text segmentation.
    const { maxChars, overlapChars } = DEFAULT_SEGMENTER;
    const local = segmentsOf(text, "text/markdown").length;
    expect(result.segments).toBeGreaterThanOrEqual(Math.floor(text.length / maxChars));
    expect(result.segments).toBeGreaterThan(local * 0.9);
    expect(result.segments).toBeLessThan(local * 1.1);
    expect(result.atoms_written).toBe(result.segments);

    // Every stored atom, opened inside the tenant object: none longer than one segment plus its overlap.
    const stored = await inTenantObject(tenant, async ({ context: { kb }, state }) => {
      const ids = state.storage.sql
        .exec<{ id: string }>(`SELECT id FROM atoms WHERE tenant = ?`, tenant)
        .toArray()
        .map((row) => row.id);
      let longest = 0;
      let opened = 0;
      for (let i = 0; i < ids.length; i += 100) {
        for (const atom of await kb.get(ids.slice(i, i + 100))) {
          longest = Math.max(longest, atom.text.length);
          opened++;
        }
      }
      return { ids: ids.length, opened, longest };
    });
    expect(stored.ids).toBe(result.segments);
    expect(stored.opened).toBe(result.segments);
    expect(stored.longest).toBeLessThanOrEqual(maxChars + overlapChars);
    expect((await storedAtomIds(tenant)).length).toBe(result.segments);
    console.log(
      `10 MiB ingest: ${bytes.byteLength} bytes, PUT ${putMs} ms, ingest ${ingestMs} ms, ` +
        `${result.segments} segments (whole-text segmentation: ${local}), longest atom ${stored.longest} chars`,
    );
    expect(ingestMs).toBeLessThan(60_000);
  }, 180_000);
});
