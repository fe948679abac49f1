import { exports } from "cloudflare:workers";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DownstreamResource, EgressPolicy } from "../../src/egress/egress-policy";
import { parseEgressPolicy } from "../../src/egress/egress-policy";
import { type TenantFetchOptions, tenantFetch } from "../../src/egress/tenant-fetch";
import { isKbError } from "../../src/errors";
import { unwrap } from "../../src/util/rpc-result";
import { storedKey } from "../helpers/docs";
import {
  bearerOf,
  claimsOf,
  equalBytes,
  interceptFetch,
  type Outbound,
  putEgress,
  r2Bytes,
  randomBytes,
  setEgress,
  tenantObjectKeys,
  tenantStub,
} from "../helpers/exchange";
import { type KbCaller, kbCaller, refusal, uniqueTenant } from "../helpers/kb-client";
import { mintToken } from "../helpers/tokens";

/**
 * The egress boundary (src/egress/tenant-fetch.ts) as import_url uses it, and tenantFetch directly for the cases
 * that need a hand-made fetcher. Refusals are tool errors (isError, ERR_EGRESS_*) that store nothing; private,
 * loopback, link-local and local-name hosts are refused even when the admin put them on the allow-list; redirects
 * are re-checked at every hop and capped; responses are capped in size and time. The happy path stores the bytes as
 * an encrypted document; exchanged tokens are cached per tenant, subject, audience and scope.
 */

const DOWNSTREAM = "https://api.downstream.test/v1";
const AUDIENCE = "downstream-api";
const FILES = "https://files.example.test";
const DEFAULT_MAX = 16 * 1_048_576;

/** Origins that must never be reached, deliberately put on the allow-list (each as an https origin). */
const PRIVATE_URLS = [
  "https://10.0.0.1/x",
  "https://172.16.0.1/x",
  "https://172.31.255.254/x",
  "https://192.168.1.1/x",
  "https://127.0.0.1/x",
  "https://169.254.169.254/latest/meta-data/",
  "https://100.64.0.1/x",
  "https://0.0.0.0/x",
  "https://[::1]/x",
  "https://[::]/x",
  "https://[fd00::1]/x",
  "https://[fe80::1]/x",
  "https://[::ffff:127.0.0.1]/x",
  "https://[::ffff:169.254.169.254]/x",
  "https://0x7f.0.0.1/x",
  "https://2130706433/x",
  "https://0177.0.0.1/x",
  "https://127.1/x",
  "https://0x7f000001/x",
  "https://%31%32%37.0.0.1/x",
  "https://localhost/x",
  "https://LOCALHOST./x",
  "https://api.localhost/x",
  "https://db.internal/x",
  "https://metadata.google.internal/computeMetadata/v1/",
  "https://printer.local/x",
  "https://intranet/x",
];

const POLICY = {
  origins: ["https://api.downstream.test", FILES, ...PRIVATE_URLS.map((url) => new URL(url).origin)],
  resources: [{ resource: DOWNSTREAM, audience: AUDIENCE, scopes: ["docs.read", "docs.write"] }],
};

const T = uniqueTenant("eg");
const B = uniqueTenant("egb");
let caller: KbCaller;
let outbound: Outbound[];
let restore: () => void;
/** Bytes produced by the streamed oversized body, and whether the reader cancelled it. */
const stream = { produced: 0, cancelled: false };
const REPORT = "# Quarterly report\nplaintext-marker-7f3a9 should never be stored in the clear\n";
const BINARY = randomBytes(100_000);

function redirect(location: string, status = 302): Response {
  return new Response(null, { status, headers: { location } });
}

beforeAll(async () => {
  const answer = await putEgress(T, POLICY);
  expect(answer.status, answer.text).toBe(200);
  // The policy really holds the private origins (so the refusals below come from the guard, not the allow-list).
  const stored = (answer.body.egress as EgressPolicy).origins;
  for (const origin of ["https://127.0.0.1", "https://169.254.169.254", "https://[::1]", "https://localhost"]) {
    expect(stored).toContain(origin);
  }
  await setEgress(B, POLICY);
  caller = await kbCaller(T, { sub: "alice", scope: "mcp kb.read kb.write docs.read" });
  const spy = interceptFetch((request) => {
    const url = new URL(request.url);
    const path = url.pathname;
    if (url.origin === FILES) {
      if (path === "/bounce-to-api") return redirect(`${DOWNSTREAM}/report.md`);
      return new Response("public file", { headers: { "content-type": "text/plain" } });
    }
    if (url.origin !== "https://api.downstream.test") return new Response("must not be fetched", { status: 200 });
    const chain = /^\/v1\/chain\/(\d+)$/.exec(path);
    if (chain) {
      const left = Number(chain[1]);
      return left > 0 ? redirect(`/v1/chain/${left - 1}`, 301) : new Response("end of chain");
    }
    switch (path) {
      case "/v1/report.md":
        return new Response(REPORT, { headers: { "content-type": "text/markdown; charset=utf-8" } });
      case "/v1/blob":
        return new Response(BINARY, { headers: { "content-type": "application/octet-stream" } });
      case "/v1/to-evil":
        return redirect("https://evil.example.test/steal");
      case "/v1/to-metadata":
        return redirect("https://169.254.169.254/latest/meta-data/iam/");
      case "/v1/to-loopback":
        return redirect("https://0x7f.0.0.1/admin", 307);
      case "/v1/to-http":
        return redirect("http://api.downstream.test/v1/report.md");
      case "/v1/to-userinfo":
        return redirect("https://user:pass@api.downstream.test/v1/report.md");
      case "/v1/declared-huge":
        return new Response("small body, big claim", {
          headers: { "content-type": "text/plain", "content-length": String(DEFAULT_MAX + 1) },
        });
      case "/v1/streamed-huge": {
        const chunk = new Uint8Array(65_536);
        return new Response(
          new ReadableStream<Uint8Array>({
            pull(controller) {
              stream.produced += chunk.byteLength;
              controller.enqueue(chunk);
            },
            cancel() {
              stream.cancelled = true;
            },
          }),
          { headers: { "content-type": "application/octet-stream" } },
        );
      }
      case "/v1/broken":
        return new Response("upstream error", { status: 500 });
      case "/v1/missing":
        return new Response("not here", { status: 404 });
      case "/v1/csv":
        return new Response("a,b\n1,2\n", { headers: { "content-type": "text/csv; charset=utf-8; header=present" } });
      default:
        return new Response(`downstream ${path}`, { headers: { "content-type": "text/plain" } });
    }
  });
  outbound = spy.calls;
  restore = spy.restore;
});

afterAll(() => restore());

async function during<T>(step: () => Promise<T>): Promise<{ value: T; calls: Outbound[] }> {
  const before = outbound.length;
  const value = await step();
  return { value, calls: outbound.slice(before) };
}

async function documentCount(tenant: string): Promise<number> {
  return unwrap(await tenantStub(tenant).adminStatus(tenant)).documents;
}

async function r2Count(tenant: string): Promise<number> {
  return (await tenantObjectKeys(tenant)).length;
}

/** import_url that must be refused with `code`, storing nothing; returns the refusal and the fetches made. */
async function refusedImport(url: string, code: string): Promise<{ message: string; calls: Outbound[] }> {
  const before = { docs: await documentCount(T), objects: await r2Count(T) };
  const id = `refused-${crypto.randomUUID().slice(0, 8)}`;
  const { value: result, calls } = await during(() => caller.call("import_url", { url, id }));
  const refused = refusal(result);
  expect(refused.code, `${url}: ${refused.message}`).toBe(code);
  // Stores nothing: no document row, no R2 object, and the id is not readable.
  expect(await documentCount(T)).toBe(before.docs);
  expect(await r2Count(T)).toBe(before.objects);
  expect(refusal(await caller.call("get_document", { id })).code).toBe("ERR_NOT_FOUND");
  return { message: refused.message, calls };
}

describe("import_url refusals", () => {
  it("an origin that is not on the allow-list: refused before any fetch", async () => {
    const { message, calls } = await refusedImport("https://evil.example.test/payload", "ERR_EGRESS_DENIED");
    expect(message).toMatch(/allow-list/);
    expect(calls).toEqual([]);
  });

  it("http:// URLs, even to an allowed host", async () => {
    const { calls } = await refusedImport("http://api.downstream.test/v1/report.md", "ERR_EGRESS_DENIED");
    expect(calls).toEqual([]);
  });

  it("other schemes and non-URLs", async () => {
    for (const url of ["ftp://api.downstream.test/v1/x", "file:///etc/passwd", "data:text/plain,hi", "not a url"]) {
      expect((await refusedImport(url, "ERR_EGRESS_DENIED")).calls).toEqual([]);
    }
  });

  it("URLs with userinfo", async () => {
    for (const url of [
      "https://user:pass@api.downstream.test/v1/report.md",
      "https://user@api.downstream.test/v1/report.md",
      "https://:pass@api.downstream.test/v1/report.md",
    ]) {
      const { message, calls } = await refusedImport(url, "ERR_EGRESS_DENIED");
      expect(message).toMatch(/credentials/);
      expect(calls).toEqual([]);
    }
  });

  it("private, loopback, link-local, metadata and local-name hosts, although they are on the allow-list", async () => {
    for (const url of PRIVATE_URLS) {
      const { message, calls } = await refusedImport(url, "ERR_EGRESS_DENIED");
      // Refused by the address guard (not by the allow-list, which lists them).
      expect(message, url).toMatch(/not reachable/);
      expect(calls, url).toEqual([]);
    }
  });

  it("the same private hosts are refused for another tenant with the same policy (the guard is not per tenant)", async () => {
    const other = await kbCaller(B, { scope: "mcp kb.write docs.read" });
    const { calls } = await during(async () => {
      for (const url of ["https://169.254.169.254/latest/meta-data/", "https://[::1]/x", "https://2130706433/x"]) {
        expect(refusal(await other.call("import_url", { url })).code).toBe("ERR_EGRESS_DENIED");
      }
    });
    expect(calls).toEqual([]);
  });

  it("a redirect to a disallowed origin: the first hop only", async () => {
    const { calls } = await refusedImport(`${DOWNSTREAM}/to-evil`, "ERR_EGRESS_DENIED");
    expect(calls.map((call) => call.url)).toEqual([`${DOWNSTREAM}/to-evil`]);
  });

  it("a redirect to a private IP (metadata, odd-spelled loopback), http, or userinfo: refused at the hop", async () => {
    for (const path of ["to-metadata", "to-loopback", "to-http", "to-userinfo"]) {
      const { calls } = await refusedImport(`${DOWNSTREAM}/${path}`, "ERR_EGRESS_DENIED");
      expect(calls.map((call) => call.url)).toEqual([`${DOWNSTREAM}/${path}`]);
    }
  });

  it("more than 3 redirects: refused after the 4th response; exactly 3 are followed", async () => {
    const { message, calls } = await refusedImport(`${DOWNSTREAM}/chain/4`, "ERR_EGRESS_DENIED");
    expect(message).toMatch(/redirects/);
    expect(calls.map((call) => new URL(call.url).pathname)).toEqual([
      "/v1/chain/4",
      "/v1/chain/3",
      "/v1/chain/2",
      "/v1/chain/1",
    ]);
    const { value, calls: followed } = await during(() =>
      caller.ok<{ source: string }>("import_url", { url: `${DOWNSTREAM}/chain/3`, id: "chain-ok" }),
    );
    expect(value.source).toBe(`${DOWNSTREAM}/chain/0`);
    expect(followed).toHaveLength(4);
  });

  it("an oversized response with a declared Content-Length: refused without reading it", async () => {
    const { calls } = await refusedImport(`${DOWNSTREAM}/declared-huge`, "ERR_EGRESS_TOO_LARGE");
    expect(calls).toHaveLength(1);
  });

  it("an oversized response streamed without Content-Length: refused, and the stream is cancelled", async () => {
    stream.produced = 0;
    stream.cancelled = false;
    const { message } = await refusedImport(`${DOWNSTREAM}/streamed-huge`, "ERR_EGRESS_TOO_LARGE");
    expect(message).toContain(String(DEFAULT_MAX));
    expect(stream.produced).toBeGreaterThan(DEFAULT_MAX);
    // The reader stops at the cap (a little read-ahead is fine, reading on is not).
    expect(stream.produced).toBeLessThan(DEFAULT_MAX + 1_048_576);
    expect(stream.cancelled).toBe(true);
  });

  it("downstream errors: ERR_EGRESS_FAILED", async () => {
    expect((await refusedImport(`${DOWNSTREAM}/broken`, "ERR_EGRESS_FAILED")).message).toContain("500");
    expect((await refusedImport(`${DOWNSTREAM}/missing`, "ERR_EGRESS_FAILED")).message).toContain("404");
  });

  it("a tenant without an egress policy can fetch nothing", async () => {
    const loner = await kbCaller(uniqueTenant("egnone"), { scope: "mcp kb.write" });
    const { calls } = await during(async () => {
      expect(refusal(await loner.call("import_url", { url: `${DOWNSTREAM}/report.md` })).code).toBe(
        "ERR_EGRESS_DENIED",
      );
    });
    expect(calls).toEqual([]);
  });
});

describe("import_url happy path", () => {
  it("stores the fetched bytes as an encrypted document, readable with get_document", async () => {
    const { value, calls } = await during(() =>
      caller.ok<{ document: { id: string; size: number; contentType: string }; source: string }>("import_url", {
        url: `${DOWNSTREAM}/report.md#section`,
        id: "report",
      }),
    );
    expect(calls.map((call) => call.url)).toEqual([`${DOWNSTREAM}/report.md`]);
    const bytes = new TextEncoder().encode(REPORT);
    expect(value.source).toBe(`${DOWNSTREAM}/report.md`);
    expect(value.document).toMatchObject({
      id: "report",
      size: bytes.byteLength,
      contentType: "text/markdown; charset=utf-8",
    });
    const read = await caller.ok<{ text: string }>("get_document", { id: "report" });
    expect(read.text).toBe(REPORT);
    // At rest: an R2 object under the tenant's prefix that does not contain the plaintext.
    const stored = await r2Bytes(await storedKey(T, "report"));
    expect(stored).not.toBeNull();
    const storedText = new TextDecoder("latin1").decode(stored ?? new Uint8Array());
    expect(storedText).not.toContain("plaintext-marker-7f3a9");
    expect(stored?.byteLength).toBeGreaterThan(bytes.byteLength);
  });

  it("binary bodies round-trip byte for byte; the default id is derived from the URL", async () => {
    const imported = await caller.ok<{ document: { id: string; size: number } }>("import_url", {
      url: `${DOWNSTREAM}/blob`,
    });
    expect(imported.document.id).toMatch(/^url-[0-9a-f]{24}$/);
    expect(imported.document.size).toBe(BINARY.byteLength);
    const { base64 } = await caller.ok<{ base64: string }>("get_document", { id: imported.document.id });
    const binary = atob(base64.replace(/-/g, "+").replace(/_/g, "/"));
    expect(
      equalBytes(
        Uint8Array.from(binary, (char) => char.charCodeAt(0)),
        BINARY,
      ),
    ).toBe(true);
  });

  it("a redirect from an allowed public origin to the downstream resource gets the exchanged token only there", async () => {
    const { calls } = await during(() => caller.ok("import_url", { url: `${FILES}/bounce-to-api`, id: "bounced" }));
    expect(calls.map((call) => call.url)).toEqual([`${FILES}/bounce-to-api`, `${DOWNSTREAM}/report.md`]);
    expect(calls[0]?.headers.authorization).toBeUndefined();
    expect(claimsOf(bearerOf(calls[1]?.headers ?? {}) ?? "x.e30.x").aud).toBe(AUDIENCE);
  });

  // Regression: import_url passes the downstream Content-Type to
  // the document store verbatim; a valid header with two parameters (RFC 4180 `header=present`) or a quoted
  // charset is refused by the store's stricter pattern, so the import fails after the fetch. Flip to it() once fixed.
  it("a Content-Type with several parameters is stored (normalized), not refused", async () => {
    const result = await caller.call("import_url", { url: `${DOWNSTREAM}/csv`, id: "csv" });
    expect(result.isError, result.raw).not.toBe(true);
    const read = await caller.ok<{ text: string; document: { contentType: string } }>("get_document", { id: "csv" });
    expect(read.text).toBe("a,b\n1,2\n");
    expect(read.document.contentType).toMatch(/^text\/csv/);
  });
});

describe("exchanged tokens: cached per tenant, subject, audience and scope", () => {
  it("two imports by the same caller use one exchanged token (one signing call)", async () => {
    const { calls } = await during(async () => {
      await caller.ok("import_url", { url: `${DOWNSTREAM}/one`, id: "cache-1" });
      await caller.ok("import_url", { url: `${DOWNSTREAM}/two`, id: "cache-2" });
    });
    const tokens = calls.map((call) => bearerOf(call.headers));
    expect(tokens).toHaveLength(2);
    expect(tokens[0]).not.toBeNull();
    // Identical tokens (same jti, same iat): signed once, served from the cache the second time.
    expect(tokens[1]).toBe(tokens[0]);
    const claims = claimsOf(tokens[0] as string);
    expect(claims).toMatchObject({ aud: AUDIENCE, sub: "alice", tenant_id: T, scope: "docs.read" });
  });

  it("another subject or another scope set of the same tenant gets its own token", async () => {
    const own = bearerOf(
      (await during(() => caller.ok("import_url", { url: `${DOWNSTREAM}/mine`, id: "mine" }))).calls[0]?.headers ?? {},
    );
    const bob = await kbCaller(T, { sub: "bob", scope: "mcp kb.write docs.read" });
    const wide = await kbCaller(T, { sub: "alice", scope: "mcp kb.write docs.read docs.write" });
    const bobToken = bearerOf(
      (await during(() => bob.ok("import_url", { url: `${DOWNSTREAM}/bob`, id: "bob" }))).calls[0]?.headers ?? {},
    );
    const wideToken = bearerOf(
      (await during(() => wide.ok("import_url", { url: `${DOWNSTREAM}/wide`, id: "wide" }))).calls[0]?.headers ?? {},
    );
    expect(bobToken).not.toBe(own);
    expect(claimsOf(bobToken ?? "")).toMatchObject({ sub: "bob", tenant_id: T, scope: "docs.read" });
    expect(wideToken).not.toBe(own);
    expect(claimsOf(wideToken ?? "")).toMatchObject({ sub: "alice", tenant_id: T, scope: "docs.read docs.write" });
  });

  it("B's import (same subject name, same audience) never reuses A's token", async () => {
    const a = bearerOf(
      (await during(() => caller.ok("import_url", { url: `${DOWNSTREAM}/shared`, id: "a-shared" }))).calls[0]
        ?.headers ?? {},
    );
    const bCaller = await kbCaller(B, { sub: "alice", scope: "mcp kb.read kb.write docs.read" });
    const first = await during(() => bCaller.ok("import_url", { url: `${DOWNSTREAM}/shared`, id: "b-shared" }));
    const second = await during(() => bCaller.ok("import_url", { url: `${DOWNSTREAM}/shared`, id: "b-shared-2" }));
    const b1 = bearerOf(first.calls[0]?.headers ?? {});
    const b2 = bearerOf(second.calls[0]?.headers ?? {});
    expect(a).not.toBeNull();
    expect(b1).not.toBeNull();
    expect(b1).not.toBe(a);
    expect(b2).toBe(b1);
    expect(claimsOf(b1 ?? "")).toMatchObject({ sub: "alice", tenant_id: B, aud: AUDIENCE });
    expect(claimsOf(a ?? "").tenant_id).toBe(T);
    expect(claimsOf(b1 ?? "").jti).not.toBe(claimsOf(a ?? "").jti);
    // And B's documents are B's: A cannot read B's import.
    expect(refusal(await caller.call("get_document", { id: "b-shared" })).code).toBe("ERR_NOT_FOUND");
  });
});

describe("tenantFetch directly", () => {
  const policy = parseEgressPolicy({
    origins: ["https://api.downstream.test", "https://127.0.0.1"],
    resources: [{ resource: DOWNSTREAM, audience: AUDIENCE, scopes: ["docs.read"] }],
  });

  function options(fetcher: typeof fetch, extra: Partial<TenantFetchOptions> = {}): TenantFetchOptions {
    return { policy, tokenFor: async () => "exchanged-token", fetcher, maxBytes: 1024, timeoutMs: 5_000, ...extra };
  }

  async function codeOf(promise: Promise<unknown>): Promise<string> {
    try {
      await promise;
    } catch (error) {
      return isKbError(error) ? error.code : `not a KbError: ${String(error)}`;
    }
    return "resolved";
  }

  it("a fetch that never answers is aborted at timeoutMs: ERR_EGRESS_TIMEOUT", async () => {
    let aborted = false;
    const hanging = ((_url: RequestInfo | URL, init?: RequestInit) =>
      new Promise<Response>((_resolve, reject) => {
        init?.signal?.addEventListener("abort", () => {
          aborted = true;
          reject(init.signal?.reason);
        });
      })) as typeof fetch;
    const started = Date.now();
    expect(await codeOf(tenantFetch(`${DOWNSTREAM}/slow`, options(hanging, { timeoutMs: 150 })))).toBe(
      "ERR_EGRESS_TIMEOUT",
    );
    expect(aborted).toBe(true);
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it("a body that stalls after the headers is aborted too: ERR_EGRESS_TIMEOUT", async () => {
    const stalling = (async (_url: RequestInfo | URL, init?: RequestInit) =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(new Uint8Array(10));
            init?.signal?.addEventListener("abort", () => controller.error(init.signal?.reason));
          },
        }),
      )) as typeof fetch;
    const started = Date.now();
    expect(await codeOf(tenantFetch(`${DOWNSTREAM}/slow-body`, options(stalling, { timeoutMs: 150 })))).toBe(
      "ERR_EGRESS_TIMEOUT",
    );
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it("the size cap is exact: maxBytes passes, maxBytes + 1 fails (declared or streamed)", async () => {
    const body = (size: number, declared: boolean) =>
      (async () =>
        new Response(
          declared
            ? new Uint8Array(size)
            : new ReadableStream<Uint8Array>({
                start(controller) {
                  for (let sent = 0; sent < size; sent += 100) {
                    controller.enqueue(new Uint8Array(Math.min(100, size - sent)));
                  }
                  controller.close();
                },
              }),
          declared ? { headers: { "content-length": String(size) } } : {},
        )) as typeof fetch;
    for (const declared of [true, false]) {
      const ok = await tenantFetch(`${DOWNSTREAM}/x`, options(body(1024, declared)));
      expect(ok.body.byteLength).toBe(1024);
      expect(await codeOf(tenantFetch(`${DOWNSTREAM}/x`, options(body(1025, declared))))).toBe("ERR_EGRESS_TOO_LARGE");
    }
  });

  it("a network failure is ERR_EGRESS_FAILED", async () => {
    const failing = (async () => {
      throw new TypeError("network down");
    }) as typeof fetch;
    expect(await codeOf(tenantFetch(`${DOWNSTREAM}/x`, options(failing)))).toBe("ERR_EGRESS_FAILED");
  });

  it("odd IPv4 spellings of an allow-listed loopback never reach the fetcher", async () => {
    let called = 0;
    const counting = (async () => {
      called++;
      return new Response("x");
    }) as typeof fetch;
    for (const url of [
      "https://127.0.0.1/",
      "https://0x7f.0.0.1/",
      "https://2130706433/",
      "https://0177.0.0.1/",
      "https://127.0.1/",
      "https://0x7f.1/",
      "https://127.000.000.001/",
    ]) {
      expect(await codeOf(tenantFetch(url, options(counting))), url).toBe("ERR_EGRESS_DENIED");
    }
    expect(called).toBe(0);
  });

  it("the exchanged token goes only to URLs under the resource, and is fetched per hop", async () => {
    const targets: DownstreamResource[] = [];
    const seen: (string | null)[] = [];
    const recording = (async (_url: RequestInfo | URL, init?: RequestInit) => {
      seen.push(new Headers(init?.headers).get("authorization"));
      return new Response("x");
    }) as typeof fetch;
    const tokenFor = async (target: DownstreamResource) => {
      targets.push(target);
      return "exchanged-token";
    };
    await tenantFetch(`${DOWNSTREAM}/doc`, options(recording, { tokenFor }));
    await tenantFetch("https://api.downstream.test/v1", options(recording, { tokenFor }));
    await tenantFetch("https://api.downstream.test/other", options(recording, { tokenFor }));
    expect(seen).toEqual(["Bearer exchanged-token", "Bearer exchanged-token", null]);
    expect(targets.map((target) => target.audience)).toEqual([AUDIENCE, AUDIENCE]);
  });

  // Regression: resourceForUrl matches the resource path as a
  // string prefix, so https://api.downstream.test/v1beta/... (not under /v1/) also gets the /v1 resource's token.
  // Flip to it() once fixed.
  it("a sibling path that merely starts with the resource path (/v1beta) gets no token", async () => {
    const seen: (string | null)[] = [];
    const recording = (async (_url: RequestInfo | URL, init?: RequestInit) => {
      seen.push(new Headers(init?.headers).get("authorization"));
      return new Response("x");
    }) as typeof fetch;
    await tenantFetch("https://api.downstream.test/v1beta/doc", options(recording));
    expect(seen).toEqual([null]);
  });
});

describe("the admin API keeps the policy well-formed", () => {
  const GOOD = { origins: [FILES], resources: [{ resource: DOWNSTREAM, audience: AUDIENCE, scopes: ["docs.read"] }] };
  const BAD: unknown[] = [
    { origins: ["http://api.downstream.test"], resources: [] },
    { origins: [], resources: [{ resource: "http://api.downstream.test/v1", scopes: [] }] },
    { origins: [], resources: [{ resource: `${DOWNSTREAM}#x`, scopes: [] }] },
    { origins: [], resources: [], extra: true },
    { origins: [], resources: [{ resource: DOWNSTREAM, scopes: ["bad scope"] }] },
    "not an object",
  ];

  it("refuses malformed policies and non-admin callers; the stored policy is unchanged", async () => {
    const tenant = uniqueTenant("egbad");
    await setEgress(tenant, GOOD);
    for (const bad of BAD) {
      const answer = await putEgress(tenant, bad);
      expect(answer.status, JSON.stringify(bad)).toBeGreaterThanOrEqual(400);
      expect(answer.text).not.toContain("egress-policy.ts");
    }
    const tenantToken = await mintToken({ tenant, scope: "mcp kb.write" });
    const response = await exports.default.fetch(
      new Request(`https://kb.test/admin/tenants/${tenant}/egress`, {
        method: "PUT",
        headers: { authorization: `Bearer ${tenantToken}`, "content-type": "application/json" },
        body: JSON.stringify({ origins: ["https://evil.example.test"], resources: [] }),
      }),
    );
    expect(response.status).toBe(401);
    const status = unwrap(await tenantStub(tenant).adminStatus(tenant));
    expect(status.egress).toEqual(parseEgressPolicy(GOOD));
  });

  // Regression: a refusal thrown inside the tenant object keeps its status across RPC (400, not 500).
  it("a malformed policy is a 400 client error, not a 500", async () => {
    const answer = await putEgress(uniqueTenant("egbad"), BAD[0]);
    expect(answer.status, answer.text).toBe(400);
  });
});
