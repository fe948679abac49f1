import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { signRawToken } from "../helpers/http";
import { initializeBody, mcpFetch, rpcResult } from "../helpers/mcp-http";
import { mintToken, RESOURCE } from "../helpers/tokens";

type LogLine = Record<string, unknown>;

const CONSOLE_METHODS = ["log", "info", "debug", "warn", "error"] as const;

let captured: string[] = [];

beforeEach(() => {
  captured = [];
  for (const method of CONSOLE_METHODS) {
    vi.spyOn(console, method).mockImplementation((...args: unknown[]) => {
      captured.push(args.map((arg) => (typeof arg === "string" ? arg : String(arg))).join(" "));
    });
  }
});

afterEach(() => {
  vi.restoreAllMocks();
});

interface Exchange {
  readonly response: Response;
  readonly body: string;
  readonly raw: string[];
  readonly lines: LogLine[];
}

/** Sends one request and returns its response (fully read) with exactly the log lines it produced. */
async function exchange(send: () => Promise<Response>): Promise<Exchange> {
  const start = captured.length;
  const response = await send();
  const body = await response.text();
  const raw = captured.slice(start);
  const lines = raw.map((line) => {
    const parsed: unknown = JSON.parse(line);
    expect(typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)).toBe(true);
    return parsed as LogLine;
  });
  return { response, body, raw, lines };
}

/** Every line is one JSON object with an event and this response's request id. */
function expectWellFormed(ex: Exchange): void {
  expect(ex.lines.length).toBeGreaterThan(0);
  const requestId = ex.response.headers.get("x-request-id");
  expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
  for (const [i, line] of ex.lines.entries()) {
    expect(ex.raw[i]?.trim().startsWith("{")).toBe(true);
    expect(ex.raw[i]?.includes("\n")).toBe(false);
    expect(typeof line.event).toBe("string");
    expect(line.requestId).toBe(requestId);
  }
}

function expectNoSecret(ex: Exchange, token: string): void {
  const [, payload, signature] = token.split(".");
  expect(signature?.length).toBeGreaterThan(20);
  expect(payload?.length).toBeGreaterThan(20);
  for (const line of ex.raw) {
    expect(line).not.toContain(token);
    expect(line).not.toContain(signature);
    expect(line).not.toContain(payload);
    expect(line.toLowerCase()).not.toContain("bearer");
    expect(line).not.toContain("access_token");
  }
}

function accessLine(ex: Exchange): LogLine {
  const lines = ex.lines.filter((line) => line.event === "http.request");
  expect(lines).toHaveLength(1);
  return lines[0] ?? {};
}

/** A refused request: the reason is logged as a code, the client sees none of it. */
function expectRefusedAndLogged(ex: Exchange, code: string, description = "The access token is invalid."): void {
  expect(ex.response.status).toBe(401);
  expect(ex.lines.filter((line) => line.code === code)).toHaveLength(1);
  expect(ex.lines.find((line) => line.code === code)).toMatchObject({ event: "request.refused", status: 401 });
  expect(accessLine(ex)).toMatchObject({ status: 401, outcome: "rejected", route: "/mcp", method: "POST" });
  // No identity was established, so nothing the token claims (tenant, subject) is logged as fact.
  for (const line of ex.lines) {
    expect(line.tenant).toBeUndefined();
    expect(line.subject).toBeUndefined();
  }
  expect(ex.body).not.toContain(code);
  expect(ex.body).not.toContain("ERR_");
  expect(JSON.parse(ex.body)).toEqual({ error: "invalid_token", error_description: description });
}

describe("structured request logs", () => {
  it("logs a valid session (initialize + whoami) with tenant, subject and outcome, never the token", async () => {
    const token = await mintToken({ tenant: "log-valid", sub: "log-alice" });
    const init = await exchange(() => mcpFetch({ method: "POST", token, body: initializeBody() }));
    expect(init.response.status).toBe(200);
    const sid = init.response.headers.get("mcp-session-id") ?? "";
    const call = await exchange(() =>
      mcpFetch({
        method: "POST",
        token,
        headers: { "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 2,
          method: "tools/call",
          params: { name: "whoami", arguments: {} },
        }),
      }),
    );
    expect(call.response.status).toBe(200);
    expect(await rpcResult(new Response(call.body, { headers: call.response.headers }))).toMatchObject({
      result: { structuredContent: { tenant: "log-valid", subject: "log-alice" } },
    });

    for (const ex of [init, call]) {
      expectWellFormed(ex);
      expectNoSecret(ex, token);
      for (const line of ex.lines) {
        expect(line).toMatchObject({ tenant: "log-valid", subject: "log-alice" });
      }
      expect(accessLine(ex)).toMatchObject({
        tenant: "log-valid",
        subject: "log-alice",
        outcome: "ok",
        status: 200,
        method: "POST",
        route: "/mcp",
      });
    }
    // The tenant object's own line is captured too (so the checks above cover it).
    expect(init.lines.map((line) => line.event)).toContain("mcp.session.created");
    expect(init.response.headers.get("x-request-id")).not.toBe(call.response.headers.get("x-request-id"));
  });

  it("logs an expired token as ERR_TOKEN_EXPIRED without telling the client", async () => {
    const token = await mintToken({ tenant: "log-expired", ttl: -3600 });
    const ex = await exchange(() => mcpFetch({ method: "POST", token, body: initializeBody() }));
    expectWellFormed(ex);
    expectNoSecret(ex, token);
    expectRefusedAndLogged(ex, "ERR_TOKEN_EXPIRED");
  });

  it("logs a wrong-audience token as ERR_TOKEN_WRONG_AUDIENCE; the client is told only the expected audience", async () => {
    const token = await signRawToken({ tenant_id: "log-aud", aud: "https://other.test/mcp", scope: "mcp" });
    const ex = await exchange(() => mcpFetch({ method: "POST", token, body: initializeBody() }));
    expectWellFormed(ex);
    expectNoSecret(ex, token);
    expectRefusedAndLogged(
      ex,
      "ERR_TOKEN_WRONG_AUDIENCE",
      `The access token is for another audience; this endpoint accepts tokens for ${RESOURCE}.`,
    );
    // The public resource URL, never the token's own claim values.
    expect(ex.body).toContain(RESOURCE);
    expect(ex.body).not.toContain("other.test");
  });

  it("logs a token in the query string as ERR_TOKEN_IN_QUERY, without logging the query", async () => {
    const token = await mintToken({ tenant: "log-query" });
    const ex = await exchange(() =>
      mcpFetch({ method: "POST", path: `/mcp?access_token=${token}`, body: initializeBody() }),
    );
    expectWellFormed(ex);
    expectNoSecret(ex, token);
    expectRefusedAndLogged(ex, "ERR_TOKEN_IN_QUERY");
  });

  it("refuses a query-string token even alongside a valid header, and logs neither", async () => {
    const token = await mintToken({ tenant: "log-query-both" });
    const ex = await exchange(() =>
      mcpFetch({ method: "POST", token, path: `/mcp?access_token=${token}`, body: initializeBody() }),
    );
    expectWellFormed(ex);
    expectNoSecret(ex, token);
    expectRefusedAndLogged(ex, "ERR_TOKEN_IN_QUERY");
  });

  it("logs a valid token that the edge refuses for transport reasons with the request id, not the token", async () => {
    const token = await mintToken({ tenant: "log-origin" });
    const ex = await exchange(() =>
      mcpFetch({ method: "POST", token, headers: { origin: "https://evil.test" }, body: initializeBody() }),
    );
    expect(ex.response.status).toBe(403);
    expectWellFormed(ex);
    expectNoSecret(ex, token);
    expect(ex.lines.find((line) => line.event === "request.refused")).toMatchObject({
      code: "ERR_ORIGIN_FORBIDDEN",
      status: 403,
    });
    expect(accessLine(ex)).toMatchObject({ status: 403, outcome: "rejected" });
  });
});

describe("the request log writes the route pattern, never the raw path or query (issue 11 item 9)", () => {
  it("documents, admin paths and unmatched paths: the pattern only, no id, tenant path segment or token", async () => {
    const token = await mintToken({ tenant: "log-route" });
    const secretId = `doc-${crypto.randomUUID()}`;
    const cases: { send: () => Promise<Response>; route: string; leak: string }[] = [
      {
        send: () =>
          mcpFetch({ method: "GET", token, path: `/v1/documents/${secretId}?access_token=${token}`, headers: {} }),
        route: "/v1/documents/:id",
        leak: secretId,
      },
      {
        send: () => mcpFetch({ method: "GET", token, path: `/v1/documents/${secretId}`, headers: { accept: "*/*" } }),
        route: "/v1/documents/:id",
        leak: secretId,
      },
      {
        send: () => mcpFetch({ method: "GET", token, path: "/admin/tenants/log-route-secret-name" }),
        route: "/admin/tenants/:tenant",
        leak: "log-route-secret-name",
      },
      {
        send: () => mcpFetch({ method: "GET", path: `/no/such/${secretId}?access_token=${token}` }),
        route: "(no route)",
        leak: secretId,
      },
    ];
    for (const { send, route, leak } of cases) {
      const ex = await exchange(send);
      expectWellFormed(ex);
      expectNoSecret(ex, token);
      const line = accessLine(ex);
      expect(line.route).toBe(route);
      expect(line).not.toHaveProperty("path");
      for (const raw of ex.raw) expect(raw).not.toContain(leak);
    }
  });
});
