import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { sha256Hex } from "../../src/util/bytes";
import { MODERN_VERSION, modernRequest } from "../helpers/clients";
import { initializeBody, LEGACY_VERSION, mcpFetch, rpcResult } from "../helpers/mcp-http";
import { mintToken } from "../helpers/tokens";

/**
 * 2025-era sessions over raw HTTP: a session id is bound to the tenant and subject that created it, ends on
 * DELETE, idle expiry and the per-subject bound (MAX_SESSIONS_PER_SUBJECT=4 in vitest.config.ts), is stored only
 * as a hash, and survives eviction of the tenant object.
 */

const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

function stubFor(tenant: string) {
  return env.TENANT_SERVER.get(env.TENANT_SERVER.idFromName(tenant));
}

async function openSession(token: string): Promise<string> {
  const response = await mcpFetch({ method: "POST", token, body: initializeBody() });
  expect(response.status).toBe(200);
  expect(await rpcResult(response)).toMatchObject({ result: { protocolVersion: LEGACY_VERSION } });
  const sessionId = response.headers.get("mcp-session-id") ?? "";
  expect(sessionId).toMatch(SESSION_ID);
  return sessionId;
}

function sessionHeaders(sessionId: string): Record<string, string> {
  return { "mcp-session-id": sessionId, "mcp-protocol-version": LEGACY_VERSION };
}

function whoamiCall(token: string, sessionId: string, id: number | string = 2): Promise<Response> {
  return mcpFetch({
    method: "POST",
    token,
    headers: sessionHeaders(sessionId),
    body: JSON.stringify({ jsonrpc: "2.0", id, method: "tools/call", params: { name: "whoami", arguments: {} } }),
  });
}

/** Calls whoami in the session and asserts it answers for exactly this tenant and subject. */
async function expectSessionWorks(token: string, sessionId: string, tenant: string, subject: string): Promise<void> {
  const response = await whoamiCall(token, sessionId);
  expect(response.status).toBe(200);
  expect(response.headers.get("mcp-session-id")).toBe(sessionId);
  expect(await rpcResult(response)).toMatchObject({
    id: 2,
    result: { structuredContent: { tenant, subject, era: "legacy", protocolVersion: LEGACY_VERSION } },
  });
}

interface NotFound {
  readonly status: number;
  readonly contentType: string | null;
  readonly sessionHeader: string | null;
  readonly text: string;
  readonly body: unknown;
}

async function notFound(response: Response): Promise<NotFound> {
  const text = await response.text();
  return {
    status: response.status,
    contentType: response.headers.get("content-type"),
    sessionHeader: response.headers.get("mcp-session-id"),
    text,
    body: JSON.parse(text),
  };
}

const SESSION_NOT_FOUND = {
  jsonrpc: "2.0",
  id: null,
  error: { code: -32000, message: "Session not found", data: { code: "ERR_SESSION_NOT_FOUND" } },
};

function randomSessionId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

interface SessionRow {
  tenant: string;
  subject: string;
  session_hash: string;
  protocol_version: string;
  created_at: number;
  last_seen_at: number;
}

function sessionRows(tenant: string): Promise<SessionRow[]> {
  return runInDurableObject(stubFor(tenant), (_instance, state) =>
    state.storage.sql
      .exec<Record<string, SqlStorageValue>>(`SELECT * FROM mcp_sessions`)
      .toArray()
      .map((row) => row as unknown as SessionRow),
  );
}

describe("session hijack", () => {
  it("another tenant, another subject and an unknown id all get the same 404; the owner is unaffected", async () => {
    const [tenantA, tenantB] = ["sess-hijack-a", "sess-hijack-b"];
    const alice = await mintToken({ tenant: tenantA, sub: "alice" });
    const bobA = await mintToken({ tenant: tenantA, sub: "bob" });
    const malloryB = await mintToken({ tenant: tenantB, sub: "alice" });
    const sessionId = await openSession(alice);
    // Tenant B has a live session of its own (so its object exists and has a sessions table with rows).
    const ownB = await openSession(malloryB);

    const fromOtherTenant = await notFound(await whoamiCall(malloryB, sessionId));
    const fromOtherSubject = await notFound(await whoamiCall(bobA, sessionId));
    const unknown = await notFound(await whoamiCall(alice, randomSessionId()));

    for (const answer of [fromOtherTenant, fromOtherSubject, unknown]) {
      expect(answer.status).toBe(404);
      expect(answer.contentType).toBe("application/json");
      expect(answer.sessionHeader).toBeNull();
      expect(answer.body).toEqual(SESSION_NOT_FOUND);
      for (const secret of [tenantA, tenantB, "alice", "bob", sessionId]) expect(answer.text).not.toContain(secret);
    }
    // Byte-identical bodies: an attacker cannot tell "exists elsewhere" from "never existed".
    expect(fromOtherTenant.text).toBe(unknown.text);
    expect(fromOtherSubject.text).toBe(unknown.text);

    // The victim's session still works, for the victim only, and B's own session is untouched.
    await expectSessionWorks(alice, sessionId, tenantA, "alice");
    await expectSessionWorks(malloryB, ownB, tenantB, "alice");
    // The probes created nothing: tenant A holds exactly alice's one session.
    const rowsA = await sessionRows(tenantA);
    expect(rowsA.map((row) => row.subject)).toEqual(["alice"]);
  });

  it("a malformed session id (wrong shape) is a 404 too, not a 400 or 500", async () => {
    const alice = await mintToken({ tenant: "sess-shape", sub: "alice" });
    const sessionId = await openSession(alice);
    for (const bad of [`${sessionId}x`, sessionId.slice(1), "not-a-session", sessionId.toUpperCase()]) {
      const answer = await notFound(await whoamiCall(alice, bad));
      expect(answer.status).toBe(404);
      expect(answer.body).toEqual(SESSION_NOT_FOUND);
    }
    await expectSessionWorks(alice, sessionId, "sess-shape", "alice");
  });
});

describe("DELETE", () => {
  it("ends the session (204), after which it answers 404 and a second DELETE answers 404", async () => {
    const tenant = "sess-delete";
    const alice = await mintToken({ tenant, sub: "alice" });
    const sessionId = await openSession(alice);
    const other = await openSession(alice);
    await expectSessionWorks(alice, sessionId, tenant, "alice");

    const deleted = await mcpFetch({ method: "DELETE", token: alice, headers: sessionHeaders(sessionId) });
    expect(deleted.status).toBe(204);
    expect(await deleted.text()).toBe("");

    const after = await notFound(await whoamiCall(alice, sessionId));
    expect(after.status).toBe(404);
    expect(after.body).toEqual(SESSION_NOT_FOUND);
    const again = await mcpFetch({ method: "DELETE", token: alice, headers: sessionHeaders(sessionId) });
    expect(again.status).toBe(404);
    await again.text();
    // Only that session ended.
    await expectSessionWorks(alice, other, tenant, "alice");
    expect((await sessionRows(tenant)).length).toBe(1);
  });

  it("with another subject's or another tenant's token answers 404 and leaves the owner's session alive", async () => {
    const tenant = "sess-delete-foreign";
    const alice = await mintToken({ tenant, sub: "alice" });
    const bob = await mintToken({ tenant, sub: "bob" });
    const otherTenant = await mintToken({ tenant: "sess-delete-foreign-b", sub: "alice" });
    const sessionId = await openSession(alice);

    for (const attacker of [bob, otherTenant]) {
      const response = await mcpFetch({ method: "DELETE", token: attacker, headers: sessionHeaders(sessionId) });
      expect((await notFound(response)).body).toEqual(SESSION_NOT_FOUND);
      expect(response.status).toBe(404);
    }
    await expectSessionWorks(alice, sessionId, tenant, "alice");
    expect((await sessionRows(tenant)).length).toBe(1);
  });
});

describe("transport rules", () => {
  it("a non-initialize legacy POST without Mcp-Session-Id is a 400", async () => {
    const token = await mintToken({ tenant: "sess-required" });
    const response = await mcpFetch({
      method: "POST",
      token,
      headers: { "mcp-protocol-version": LEGACY_VERSION },
      body: JSON.stringify({ jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "whoami", arguments: {} } }),
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: { data: { code: "ERR_SESSION_REQUIRED" } } });

    // Same without any version header (how a 2025-03-26 client would send it).
    const bare = await mcpFetch({
      method: "POST",
      token,
      body: JSON.stringify({ jsonrpc: "2.0", id: 4, method: "tools/list" }),
    });
    expect(bare.status).toBe(400);
    await bare.text();
  });

  it("GET with a valid session is 405; GET with an unknown session is 404", async () => {
    const tenant = "sess-get";
    const token = await mintToken({ tenant });
    const sessionId = await openSession(token);

    const valid = await mcpFetch({
      method: "GET",
      token,
      headers: { ...sessionHeaders(sessionId), accept: "text/event-stream" },
    });
    expect(valid.status).toBe(405);
    // Allow agrees with the 405: it lists what the endpoint serves, and GET is not among them.
    expect(valid.headers.get("allow")).toBe("POST, DELETE");
    await valid.text();

    const unknown = await mcpFetch({
      method: "GET",
      token,
      headers: { ...sessionHeaders(randomSessionId()), accept: "text/event-stream" },
    });
    expect(unknown.status).toBe(404);
    expect((await notFound(unknown)).body).toEqual(SESSION_NOT_FOUND);
    // The GET did not disturb the session.
    await expectSessionWorks(token, sessionId, tenant, "alice");
  });
});

describe("initialize that does not succeed", () => {
  it("an initialize the MCP transport refuses with an HTTP error (406) creates no session", async () => {
    const tenant = "sess-init-http-error";
    const token = await mintToken({ tenant, sub: "alice" });
    // Passes the edge, reaches the tenant object, and is refused by the SDK transport (Accept lacks SSE).
    const refused = await mcpFetch({
      method: "POST",
      token,
      headers: { accept: "application/json" },
      body: initializeBody(),
    });
    expect(refused.status).toBe(406);
    expect(refused.headers.get("mcp-session-id")).toBeNull();
    await refused.text();
    expect((await sessionRows(tenant)).length).toBe(0);
    // A proper initialize afterwards creates exactly one.
    await openSession(token);
    expect((await sessionRows(tenant)).length).toBe(1);
  });

  // Regression: the SDK answers an invalid initialize with HTTP 200 carrying a JSON-RPC error (and an initialize
  // notification with 202); neither may create a session.
  it("an initialize answered with a JSON-RPC error issues no session id and stores no row", async () => {
    const tenant = "sess-init-rpc-error";
    const token = await mintToken({ tenant, sub: "alice" });
    const response = await mcpFetch({
      method: "POST",
      token,
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: {} }),
    });
    const body = await rpcResult(response);
    expect(body).toHaveProperty("error");
    expect(response.headers.get("mcp-session-id")).toBeNull();
    expect((await sessionRows(tenant)).length).toBe(0);
  });

  it("an initialize sent as a notification (no id) issues no session id", async () => {
    const tenant = "sess-init-notification";
    const token = await mintToken({ tenant, sub: "alice" });
    const response = await mcpFetch({
      method: "POST",
      token,
      body: JSON.stringify({
        jsonrpc: "2.0",
        method: "initialize",
        params: { protocolVersion: LEGACY_VERSION, capabilities: {}, clientInfo: { name: "raw-test", version: "0" } },
      }),
    });
    await response.text();
    expect(response.headers.get("mcp-session-id")).toBeNull();
    expect((await sessionRows(tenant)).length).toBe(0);
  });
});

describe("lifetime and storage", () => {
  it("an idle session expires (404) and its row is removed", async () => {
    const tenant = "sess-idle";
    const token = await mintToken({ tenant, sub: "alice" });
    const idle = await openSession(token);
    const fresh = await openSession(token);
    const idleHash = await sha256Hex(idle);

    // SESSION_IDLE_TTL_S is unset: the default is 1800 s. Make the session 31 minutes idle.
    const idleSince = Date.now() - 31 * 60 * 1000;
    await runInDurableObject(stubFor(tenant), (_instance, state) => {
      state.storage.sql.exec(
        `UPDATE mcp_sessions SET last_seen_at = ? WHERE tenant = ? AND subject = ? AND session_hash = ?`,
        idleSince,
        tenant,
        "alice",
        idleHash,
      );
    });
    // Exactly the one row was rewritten.
    const before = await sessionRows(tenant);
    expect(before.filter((row) => row.last_seen_at === idleSince).map((row) => row.session_hash)).toEqual([idleHash]);

    const answer = await notFound(await whoamiCall(token, idle));
    expect(answer.status).toBe(404);
    expect(answer.body).toEqual(SESSION_NOT_FOUND);
    const rows = await sessionRows(tenant);
    expect(rows.map((row) => row.session_hash)).not.toContain(idleHash);
    await expectSessionWorks(token, fresh, tenant, "alice");
  });

  it("a session used within the idle window stays alive and its last_seen_at is refreshed", async () => {
    const tenant = "sess-refresh";
    const token = await mintToken({ tenant, sub: "alice" });
    const sessionId = await openSession(token);
    const hash = await sha256Hex(sessionId);
    const almostIdle = Date.now() - 29 * 60 * 1000;
    await runInDurableObject(stubFor(tenant), (_instance, state) => {
      state.storage.sql.exec(`UPDATE mcp_sessions SET last_seen_at = ? WHERE session_hash = ?`, almostIdle, hash);
    });
    await expectSessionWorks(token, sessionId, tenant, "alice");
    const [row] = await sessionRows(tenant);
    expect(row?.session_hash).toBe(hash);
    expect(row?.last_seen_at).toBeGreaterThan(almostIdle + 28 * 60 * 1000);
  });

  it("at most 4 sessions per subject: the oldest of 5 ends, other subjects are unaffected", async () => {
    const tenant = "sess-bound";
    const alice = await mintToken({ tenant, sub: "alice" });
    const bob = await mintToken({ tenant, sub: "bob" });
    const bobSessions = [await openSession(bob), await openSession(bob)];

    const aliceSessions: string[] = [];
    for (let i = 0; i < 5; i++) aliceSessions.push(await openSession(alice));
    expect(new Set(aliceSessions).size).toBe(5);

    const [oldest, ...newest] = aliceSessions;
    const answer = await notFound(await whoamiCall(alice, oldest ?? ""));
    expect(answer.status).toBe(404);
    expect(answer.body).toEqual(SESSION_NOT_FOUND);
    for (const sessionId of newest) await expectSessionWorks(alice, sessionId, tenant, "alice");
    for (const sessionId of bobSessions) await expectSessionWorks(bob, sessionId, tenant, "bob");

    const rows = await sessionRows(tenant);
    const hashesOf = async (ids: string[]) => Promise.all(ids.map((id) => sha256Hex(id)));
    expect(rows.filter((row) => row.subject === "alice").length).toBe(4);
    expect(rows.filter((row) => row.subject === "bob").length).toBe(2);
    expect(
      rows
        .filter((row) => row.subject === "alice")
        .map((row) => row.session_hash)
        .sort(),
    ).toEqual((await hashesOf(newest)).sort());
  });

  it("the bound evicts the least recently used session, not the first created", async () => {
    const tenant = "sess-lru";
    const alice = await mintToken({ tenant, sub: "alice" });
    const sessions: string[] = [];
    for (let i = 0; i < 4; i++) sessions.push(await openSession(alice));
    const [first, second, ...rest] = sessions;
    // Using the first session makes the second one the least recently used.
    await expectSessionWorks(alice, first ?? "", tenant, "alice");
    const fifth = await openSession(alice);

    expect((await whoamiCall(alice, second ?? "")).status).toBe(404);
    for (const sessionId of [first ?? "", ...rest, fifth]) await expectSessionWorks(alice, sessionId, tenant, "alice");
  });

  it("stores only SHA-256 hashes: the raw session id appears nowhere in the tenant database", async () => {
    const tenant = "sess-hash";
    const token = await mintToken({ tenant, sub: "alice" });
    const ids = [await openSession(token), await openSession(token)];

    const rows = await sessionRows(tenant);
    expect(rows.map((row) => row.session_hash).sort()).toEqual(
      (await Promise.all(ids.map((id) => sha256Hex(id)))).sort(),
    );
    for (const row of rows) {
      expect(row).toMatchObject({ tenant, subject: "alice", protocol_version: LEGACY_VERSION });
      expect(row.session_hash).toMatch(/^[0-9a-f]{64}$/);
    }

    // Scan every text/blob value of every table for the raw ids.
    const dump = await runInDurableObject(stubFor(tenant), (_instance, state) => {
      const tables = state.storage.sql
        .exec<{ name: string }>(
          `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\'`,
        )
        .toArray()
        .map((row) => row.name);
      const values: string[] = [];
      for (const table of tables) {
        for (const row of state.storage.sql.exec(`SELECT * FROM "${table}"`).toArray()) {
          for (const value of Object.values(row)) {
            values.push(value instanceof ArrayBuffer ? new TextDecoder().decode(value) : String(value));
          }
        }
      }
      return { tables, values };
    });
    expect(dump.tables).toContain("mcp_sessions");
    expect(dump.values.length).toBeGreaterThan(0);
    for (const value of dump.values) for (const id of ids) expect(value.includes(id)).toBe(false);
  });

  it("sessions persist in SQLite: the same session id works after the tenant object is evicted", async () => {
    const tenant = "sess-evict";
    const token = await mintToken({ tenant, sub: "alice" });
    const sessionId = await openSession(token);
    await expectSessionWorks(token, sessionId, tenant, "alice");

    const stub = stubFor(tenant);
    const marker = await runInDurableObject(stub, (instance) => {
      const bag = instance as unknown as Record<string, unknown>;
      bag.__evictionMarker = crypto.randomUUID();
      return bag.__evictionMarker;
    });
    expect(marker).toBeTypeOf("string");
    await evictDurableObject(stub);
    // A new instance: the in-memory marker is gone.
    const markerAfter = await runInDurableObject(
      stub,
      (instance) => (instance as unknown as Record<string, unknown>).__evictionMarker,
    );
    expect(markerAfter).toBeUndefined();

    await expectSessionWorks(token, sessionId, tenant, "alice");
    // And the binding to tenant and subject survives too.
    const bob = await mintToken({ tenant, sub: "bob" });
    expect((await whoamiCall(bob, sessionId)).status).toBe(404);
  });
});

describe("concurrency", () => {
  it("two tenants sending the same JSON-RPC id concurrently on both eras each get only their own answer", async () => {
    const tenants = ["sess-conc-a", "sess-conc-b"] as const;
    const tokens = await Promise.all(tenants.map((tenant) => mintToken({ tenant, sub: `${tenant}-user` })));
    const sessions = await Promise.all(tokens.map((token) => openSession(token)));
    const ROUNDS = 20;
    const JSONRPC_ID = 7;

    const jobs: { tenant: string; era: "legacy" | "modern"; response: Promise<Response> }[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      tenants.forEach((tenant, index) => {
        const token = tokens[index] ?? "";
        jobs.push({ tenant, era: "legacy", response: whoamiCall(token, sessions[index] ?? "", JSONRPC_ID) });
        const modern = modernRequest(JSONRPC_ID, "tools/call", { name: "whoami", arguments: {} });
        jobs.push({
          tenant,
          era: "modern",
          response: mcpFetch({ method: "POST", token, headers: modern.headers, body: modern.body }),
        });
      });
    }
    const answers = await Promise.all(
      jobs.map(async (job) => {
        const response = await job.response;
        return { ...job, status: response.status, body: await rpcResult(response) };
      }),
    );
    expect(answers.length).toBe(ROUNDS * 4);
    for (const answer of answers) {
      expect(answer.status).toBe(200);
      expect(answer.body).toMatchObject({
        jsonrpc: "2.0",
        id: JSONRPC_ID,
        result: {
          structuredContent: {
            tenant: answer.tenant,
            subject: `${answer.tenant}-user`,
            era: answer.era,
            protocolVersion: answer.era === "modern" ? MODERN_VERSION : LEGACY_VERSION,
          },
        },
      });
    }
  });
});

describe("protocol version within a session", () => {
  it("serves a session at its negotiated version whatever supported version a request is labelled with", async () => {
    const tenant = "sess-version-pin";
    const token = await mintToken({ tenant, sub: "alice" });
    const init = await mcpFetch({ method: "POST", token, body: initializeBody(1, "2025-06-18") });
    const sid = init.headers.get("mcp-session-id") ?? "";
    expect(sid).toMatch(SESSION_ID);
    for (const label of ["2025-11-25", "2025-03-26", "2025-06-18"]) {
      const res = await mcpFetch({
        method: "POST",
        token,
        headers: { "mcp-session-id": sid, "mcp-protocol-version": label },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 5,
          method: "tools/call",
          params: { name: "whoami", arguments: {} },
        }),
      });
      expect(res.status).toBe(200);
      const body = (await rpcResult(res)) as { result?: { structuredContent?: { protocolVersion?: string } } };
      expect(body.result?.structuredContent?.protocolVersion).toBe("2025-06-18");
    }
    // The modern revision is not a 2025 session's version: refused, not silently switched.
    const modern = await mcpFetch({
      method: "POST",
      token,
      headers: { "mcp-session-id": sid, "mcp-protocol-version": "2026-07-28" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 6, method: "tools/call", params: { name: "whoami", arguments: {} } }),
    });
    expect(modern.status).toBeGreaterThanOrEqual(400);
  });
});
