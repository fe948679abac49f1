import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { expectSafeErrorResponse, jsonRpcErrorCode, tenantObjectExists } from "../helpers/http";
import { initializeBody, mcpFetch, rpcResult } from "../helpers/mcp-http";
import { BASE, bearer, mintToken } from "../helpers/tokens";

const LIMIT = 65_536;
const ALLOWED_ORIGIN = "https://app.kb.test";

/** An initialize request padded with trailing JSON whitespace to exactly `size` bytes. */
function paddedInitialize(size: number): string {
  const body = initializeBody();
  if (body.length > size) throw new Error("size too small");
  return body + " ".repeat(size - body.length);
}

/** A body stream with no known length (no Content-Length): chunks of `chunk` bytes, `total` bytes or forever. */
function bodyStream(text: string | null, counter: { pulled: number }, chunk = 4096): ReadableStream<Uint8Array> {
  const bytes = text === null ? null : new TextEncoder().encode(text);
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (bytes === null) {
        controller.enqueue(new Uint8Array(chunk).fill(0x20));
        counter.pulled += chunk;
        return;
      }
      if (counter.pulled >= bytes.length) {
        controller.close();
        return;
      }
      const part = bytes.slice(counter.pulled, counter.pulled + chunk);
      counter.pulled += part.byteLength;
      controller.enqueue(part);
    },
  });
}

describe("Origin (DNS-rebinding protection)", () => {
  it("refuses a foreign Origin with 403 even with a valid token, before the tenant object is reached", async () => {
    const token = await mintToken({ tenant: "origin-evil-token" });
    const response = await mcpFetch({
      method: "POST",
      token,
      headers: { origin: "https://evil.test" },
      body: initializeBody(),
    });
    const body = await expectSafeErrorResponse(response, 403);
    expect(jsonRpcErrorCode(body)).toBe("ERR_ORIGIN_FORBIDDEN");
    expect(await tenantObjectExists("origin-evil-token")).toBe(false);
  });

  it("refuses a foreign Origin with 403 (not 401) when no token is sent: the origin check precedes auth", async () => {
    const response = await mcpFetch({
      method: "POST",
      headers: { origin: "https://evil.test" },
      body: initializeBody(),
    });
    expect(response.headers.get("www-authenticate")).toBeNull();
    const body = await expectSafeErrorResponse(response, 403);
    expect(jsonRpcErrorCode(body)).toBe("ERR_ORIGIN_FORBIDDEN");
  });

  it("refuses `Origin: null`", async () => {
    const token = await mintToken({ tenant: "origin-null" });
    const response = await mcpFetch({ method: "POST", token, headers: { origin: "null" }, body: initializeBody() });
    const body = await expectSafeErrorResponse(response, 403);
    expect(jsonRpcErrorCode(body)).toBe("ERR_ORIGIN_FORBIDDEN");
    expect(await tenantObjectExists("origin-null")).toBe(false);
  });

  it.each([
    "http://app.kb.test",
    "https://app.kb.test:8443",
    "https://app.kb.test.evil.test",
    "https://evil.app.kb.test",
    "https://kb.test",
  ])("refuses the look-alike origin %s", async (origin) => {
    const response = await mcpFetch({ method: "POST", headers: { origin }, body: initializeBody() });
    const body = await expectSafeErrorResponse(response, 403);
    expect(jsonRpcErrorCode(body)).toBe("ERR_ORIGIN_FORBIDDEN");
  });

  it("serves the allowed origin (initialize works)", async () => {
    const token = await mintToken({ tenant: "origin-allowed" });
    const response = await mcpFetch({
      method: "POST",
      token,
      headers: { origin: ALLOWED_ORIGIN },
      body: initializeBody(),
    });
    expect(response.status).toBe(200);
    expect(await rpcResult(response)).toMatchObject({
      jsonrpc: "2.0",
      id: 1,
      result: { protocolVersion: "2025-11-25" },
    });
    expect(await tenantObjectExists("origin-allowed")).toBe(true);
  });

  it("serves a request without Origin (non-browser clients)", async () => {
    const token = await mintToken({ tenant: "origin-absent" });
    const response = await mcpFetch({ method: "POST", token, body: initializeBody() });
    expect(response.status).toBe(200);
  });
});

describe("Host (DNS-rebinding protection)", () => {
  it("refuses a request for a foreign host name (request URL)", async () => {
    const token = await mintToken({ tenant: "host-url" });
    const response = await exports.default.fetch(
      new Request("https://evil.test/mcp", {
        method: "POST",
        headers: {
          ...bearer(token),
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
        },
        body: initializeBody(),
      }),
    );
    const body = await expectSafeErrorResponse(response, 403);
    expect(jsonRpcErrorCode(body)).toBe("ERR_HOST_FORBIDDEN");
    expect(await tenantObjectExists("host-url")).toBe(false);
  });

  it("refuses an attacker's Host header even when the URL is ours", async () => {
    const token = await mintToken({ tenant: "host-header" });
    const response = await mcpFetch({ method: "POST", token, headers: { host: "evil.test" }, body: initializeBody() });
    const body = await expectSafeErrorResponse(response, 403);
    expect(jsonRpcErrorCode(body)).toBe("ERR_HOST_FORBIDDEN");
    expect(await tenantObjectExists("host-header")).toBe(false);
  });

  it("refuses a foreign Host before authentication (no token: 403, not 401)", async () => {
    const response = await mcpFetch({
      method: "POST",
      headers: { host: "rebind.evil.test:443" },
      body: initializeBody(),
    });
    const body = await expectSafeErrorResponse(response, 403);
    expect(jsonRpcErrorCode(body)).toBe("ERR_HOST_FORBIDDEN");
  });

  it("accepts our own Host header (the guard passes and authentication runs next)", async () => {
    const response = await mcpFetch({ method: "POST", headers: { host: "kb.test" }, body: initializeBody() });
    await expectSafeErrorResponse(response, 401);
  });
});

describe("MCP-Protocol-Version", () => {
  it("refuses an unsupported version with 400 ERR_PROTOCOL_VERSION before auth", async () => {
    const response = await mcpFetch({
      method: "POST",
      headers: { "mcp-protocol-version": "1999-01-01" },
      body: initializeBody(),
    });
    const body = await expectSafeErrorResponse(response, 400);
    expect(jsonRpcErrorCode(body)).toBe("ERR_PROTOCOL_VERSION");
    expect(body).toMatchObject({ error: { code: -32602 } });
  });

  it("refuses an unsupported version with a valid token, without reaching the tenant object", async () => {
    const token = await mintToken({ tenant: "version-bad" });
    const response = await mcpFetch({
      method: "POST",
      token,
      headers: { "mcp-protocol-version": "1999-01-01" },
      body: initializeBody(),
    });
    const body = await expectSafeErrorResponse(response, 400);
    expect(jsonRpcErrorCode(body)).toBe("ERR_PROTOCOL_VERSION");
    expect(await tenantObjectExists("version-bad")).toBe(false);
  });

  it.each(["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"])(
    "lets %s through the version guard (the next check, auth, answers)",
    async (version) => {
      const response = await mcpFetch({ method: "POST", headers: { "mcp-protocol-version": version }, body: "{}" });
      await expectSafeErrorResponse(response, 401);
      expect(response.headers.get("www-authenticate")).toMatch(/^Bearer /);
    },
  );

  it.each(["2025-11-25", "2025-06-18", "2025-03-26"])(
    "serves a %s client end to end (initialize + tools/call)",
    async (version) => {
      const token = await mintToken({ tenant: `version-${version}` });
      const init = await mcpFetch({
        method: "POST",
        token,
        headers: { "mcp-protocol-version": version },
        body: initializeBody(1, version),
      });
      expect(init.status).toBe(200);
      const sid = init.headers.get("mcp-session-id") ?? "";
      expect(await rpcResult(init)).toMatchObject({ result: { protocolVersion: version } });
      const call = await mcpFetch({
        method: "POST",
        token,
        headers: { "mcp-session-id": sid, "mcp-protocol-version": version },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 2,
          method: "tools/call",
          params: { name: "whoami", arguments: {} },
        }),
      });
      expect(call.status).toBe(200);
      expect(await rpcResult(call)).toMatchObject({
        result: { structuredContent: { tenant: `version-${version}`, protocolVersion: version } },
      });
    },
  );
});

describe("request body size", () => {
  it("serves a body of exactly the limit (control)", async () => {
    const token = await mintToken({ tenant: "size-exact" });
    const body = paddedInitialize(LIMIT);
    expect(new TextEncoder().encode(body).byteLength).toBe(LIMIT);
    const response = await mcpFetch({ method: "POST", token, body });
    expect(response.status).toBe(200);
    expect(await tenantObjectExists("size-exact")).toBe(true);
  });

  it("refuses a declared Content-Length over the limit with 413 and writes nothing", async () => {
    const token = await mintToken({ tenant: "size-declared" });
    const body = paddedInitialize(LIMIT + 1);
    const response = await mcpFetch({
      method: "POST",
      token,
      headers: { "content-length": String(LIMIT + 1) },
      body,
    });
    const error = await expectSafeErrorResponse(response, 413);
    expect(jsonRpcErrorCode(error)).toBe("ERR_BODY_TOO_LARGE");
    expect(await tenantObjectExists("size-declared")).toBe(false);
  });

  it("refuses a declared oversize body before authentication (no token: 413, not 401)", async () => {
    const response = await mcpFetch({
      method: "POST",
      headers: { "content-length": String(LIMIT * 4) },
      body: paddedInitialize(LIMIT * 4),
    });
    const error = await expectSafeErrorResponse(response, 413);
    expect(jsonRpcErrorCode(error)).toBe("ERR_BODY_TOO_LARGE");
  });

  it("serves a streamed body (no Content-Length) under the limit (control)", async () => {
    const token = await mintToken({ tenant: "size-stream-ok" });
    const counter = { pulled: 0 };
    const request = new Request(`${BASE}/mcp`, { method: "POST", body: bodyStream(paddedInitialize(LIMIT), counter) });
    expect(request.headers.has("content-length")).toBe(false);
    const response = await mcpFetch({ method: "POST", token, body: request.body });
    expect(response.status).toBe(200);
    expect(counter.pulled).toBe(LIMIT);
    expect(await rpcResult(response)).toMatchObject({ id: 1, result: { protocolVersion: "2025-11-25" } });
  });

  it("refuses a streamed body (no Content-Length) that grows over the limit with 413 and writes nothing", async () => {
    const token = await mintToken({ tenant: "size-stream-big" });
    const counter = { pulled: 0 };
    const response = await mcpFetch({ method: "POST", token, body: bodyStream(paddedInitialize(LIMIT + 1), counter) });
    const error = await expectSafeErrorResponse(response, 413);
    expect(jsonRpcErrorCode(error)).toBe("ERR_BODY_TOO_LARGE");
    expect(await tenantObjectExists("size-stream-big")).toBe(false);
  });

  it("stops reading an endless streamed body: 413 without buffering it", async () => {
    const token = await mintToken({ tenant: "size-stream-endless" });
    const counter = { pulled: 0 };
    const response = await mcpFetch({ method: "POST", token, body: bodyStream(null, counter) });
    const error = await expectSafeErrorResponse(response, 413);
    expect(jsonRpcErrorCode(error)).toBe("ERR_BODY_TOO_LARGE");
    expect(counter.pulled).toBeLessThan(LIMIT * 64);
    expect(await tenantObjectExists("size-stream-endless")).toBe(false);
  });
});

describe("content type, method and path", () => {
  it("refuses a POST that is not application/json with 415 and writes nothing", async () => {
    const token = await mintToken({ tenant: "ctype-text" });
    const response = await mcpFetch({
      method: "POST",
      token,
      headers: { "content-type": "text/plain" },
      body: initializeBody(),
    });
    const body = await expectSafeErrorResponse(response, 415);
    expect(jsonRpcErrorCode(body)).toBe("ERR_CONTENT_TYPE");
    expect(await tenantObjectExists("ctype-text")).toBe(false);
  });

  it("accepts application/json with parameters (control)", async () => {
    const token = await mintToken({ tenant: "ctype-charset" });
    const response = await mcpFetch({
      method: "POST",
      token,
      headers: { "content-type": "application/json; charset=utf-8" },
      body: initializeBody(),
    });
    expect(response.status).toBe(200);
  });

  it.each(["PUT", "PATCH"])("refuses %s with 405 and an Allow header", async (method) => {
    const token = await mintToken({ tenant: `method-${method.toLowerCase()}` });
    const response = await mcpFetch({ method, token, body: initializeBody() });
    expect(response.headers.get("allow")).toBe("POST, DELETE");
    const body = await expectSafeErrorResponse(response, 405);
    expect(jsonRpcErrorCode(body)).toBe("ERR_METHOD_NOT_ALLOWED");
    expect(await tenantObjectExists(`method-${method.toLowerCase()}`)).toBe(false);
  });

  it.each(["/", "/mcp/extra", "/admin", "/.well-known/openid-configuration"])(
    "answers an unknown path (%s) with a JSON 404",
    async (path) => {
      const token = await mintToken({ tenant: "path-unknown" });
      const response = await mcpFetch({ method: "POST", token, path, body: initializeBody() });
      const body = await expectSafeErrorResponse(response, 404);
      expect(body).toMatchObject({ error: "not_found" });
    },
  );
});

describe("CORS for browser clients", () => {
  it("answers a preflight from the allowed origin and refuses others", async () => {
    const ok = await exports.default.fetch(
      new Request("https://kb.test/mcp", {
        method: "OPTIONS",
        headers: { origin: "https://app.kb.test", "access-control-request-method": "POST" },
      }),
    );
    expect(ok.status).toBe(204);
    expect(ok.headers.get("access-control-allow-origin")).toBe("https://app.kb.test");
    expect(ok.headers.get("access-control-allow-headers")).toContain("authorization");
    expect(ok.headers.get("access-control-expose-headers")).toContain("mcp-session-id");
    const evil = await exports.default.fetch(
      new Request("https://kb.test/mcp", {
        method: "OPTIONS",
        headers: { origin: "https://evil.example", "access-control-request-method": "POST" },
      }),
    );
    expect(evil.status).toBe(403);
    expect(evil.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("exposes the 401 challenge to the allowed origin only", async () => {
    const res = await exports.default.fetch(
      new Request("https://kb.test/mcp", { method: "POST", headers: { origin: "https://app.kb.test" } }),
    );
    expect(res.status).toBe(401);
    expect(res.headers.get("access-control-allow-origin")).toBe("https://app.kb.test");
    expect(res.headers.get("access-control-expose-headers")).toContain("www-authenticate");
  });
});
