import { runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { importJWK, type JWK, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { unwrapKey } from "../../src/crypto/key-wrap";
import { MasterKeys } from "../../src/crypto/master-keys";
import { type KeyPurpose, TenantKeyring } from "../../src/crypto/tenant-keyring";
import {
  ADMIN_AUDIENCE,
  type AdminAnswer,
  adminCall,
  encodings,
  legacyWhoami,
  masterSecret,
  mintAdminToken,
  openLegacySession,
  putDocument,
  readDocument,
  type StatusOut,
  tableRows,
  tenantStatus,
  tenantStub,
} from "../helpers/admin";
import { tenantObjectExists } from "../helpers/http";
import { type KbCaller, kbCaller, uniqueTenant } from "../helpers/kb-client";
import { mcpFetch } from "../helpers/mcp-http";
import { ISSUER, mintToken, RESOURCE } from "../helpers/tokens";

/** The one description a genuine token for another audience gets (issue 14: the audience is public). */
const WRONG_AUDIENCE = (expected: string) =>
  `The access token is for another audience; this endpoint accepts tokens for ${expected}.`;

/**
 * The platform-admin API (src/admin/admin-api.ts): who may call it (an admin-audience token with `platform:admin`;
 * never a tenant token, and an admin token is not a tenant token either), what a tenant path may be, the confirm
 * step of offboarding, and what status shows - key versions and epochs and counts, never key material.
 */

const T = uniqueTenant("adm");
const ATOMS = [
  { id: "a1", text: "river lake ocean delta", tags: ["water"], source: "atlas" },
  { id: "a2", text: "granite basalt quartz marble", tags: ["rock"], source: "atlas" },
  { id: "a3", text: "falcon heron otter badger", tags: ["animal"], source: "field-guide" },
  { id: "a4", text: "engine turbine piston gearbox", tags: ["machine"] },
  { id: "a5", text: "copper iron silver gold", tags: ["metal", "rock"] },
];
const DOC_1 = new TextEncoder().encode("first document, put over HTTP");
const DOC_2 = crypto.getRandomValues(new Uint8Array(40_000));

let caller: KbCaller;
let sessionId: string;
/** Every admin answer of this file, scanned for key material at the end. */
const answers: AdminAnswer[] = [];

async function admin(...args: Parameters<typeof adminCall>): Promise<AdminAnswer> {
  const answer = await adminCall(...args);
  answers.push(answer);
  return answer;
}

function routes(tenant: string): { method: "GET" | "POST" | "PUT"; path: string; body?: unknown }[] {
  return [
    { method: "GET", path: "/admin/tenants" },
    { method: "GET", path: `/admin/tenants/${tenant}` },
    { method: "POST", path: `/admin/tenants/${tenant}/offboard`, body: { confirm: tenant } },
    { method: "POST", path: `/admin/tenants/${tenant}/rotate` },
    { method: "PUT", path: `/admin/tenants/${tenant}/placement`, body: { placement: "local" } },
    { method: "POST", path: "/admin/master/rewrap" },
    { method: "GET", path: "/admin/master" },
  ];
}

interface KeyRow {
  version: number;
  epoch: string;
  wrapped: Uint8Array;
}

async function keyRows(tenant: string): Promise<KeyRow[]> {
  return (await tableRows(tenantStub(tenant), "tenant_keys")).map((row) => ({
    version: Number(row.version),
    epoch: String(row.epoch),
    wrapped: new Uint8Array(row.wrapped as ArrayBuffer),
  }));
}

/** The tenant is exactly as the beforeAll left it: same wrapped keys, active, no job, data and session usable. */
async function expectUntouched(before: KeyRow[]): Promise<void> {
  expect(await keyRows(T)).toEqual(before);
  const status = await tenantStatus(T);
  expect(status).toMatchObject({ state: "active", atoms: ATOMS.length, documents: 3, rotation: null, receipt: null });
  expect((await caller.ok<{ atom: { text: string } }>("get_atom", { id: "a3" })).atom.text).toBe(ATOMS[2]?.text);
  expect(await readDocument(caller.token, "doc-2")).toEqual(DOC_2);
  expect((await legacyWhoami(caller.token, sessionId)).status).toBe(200);
  const master = await adminCall("GET", "/admin/master");
  expect(master.body).toEqual({ job: null });
}

beforeAll(async () => {
  caller = await kbCaller(T);
  await caller.ok("add_atoms", { atoms: ATOMS });
  expect((await putDocument(caller.token, "doc-1", DOC_1)).status).toBe(201);
  expect((await putDocument(caller.token, "doc-2", DOC_2, "application/octet-stream")).status).toBe(201);
  await caller.ok("put_document", { id: "doc-3", text: "third document, put over MCP" });
  sessionId = await openLegacySession(caller.token);
});

describe("who may call the admin API", () => {
  it("no token: 401 invalid_request with a Bearer challenge, on every route, and nothing happens", async () => {
    const before = await keyRows(T);
    for (const route of routes(T)) {
      const answer = await admin(route.method, route.path, { token: null, body: route.body });
      expect(answer.status, `${route.method} ${route.path}`).toBe(401);
      expect(answer.body).toEqual({ error: "invalid_request", error_description: "An access token is required." });
      expect(answer.headers.get("www-authenticate") ?? "").toMatch(/^Bearer /);
      expect(answer.headers.get("cache-control")).toBe("no-store");
    }
    await expectUntouched(before);
  });

  it("a tenant token is refused (wrong audience), even one carrying platform:admin", async () => {
    const before = await keyRows(T);
    const tokens = [
      caller.token,
      await mintToken({ tenant: T, scope: "mcp kb.read kb.write platform:admin" }),
      await mintToken({ tenant: T, scope: "platform:admin", omit: ["tenant_id"] }),
    ];
    for (const token of tokens) {
      for (const route of routes(T)) {
        const answer = await admin(route.method, route.path, { token, body: route.body });
        expect(answer.status, `${route.method} ${route.path}`).toBe(401);
        // A genuine token for the MCP resource: told that the admin API expects its own audience, nothing else.
        expect(answer.body).toEqual({
          error: "invalid_token",
          error_description: WRONG_AUDIENCE(ADMIN_AUDIENCE),
        });
        expect(answer.headers.get("www-authenticate") ?? "").toContain('error="invalid_token"');
      }
    }
    await expectUntouched(before);
  });

  it("an admin-audience token without platform:admin: 403 insufficient_scope naming platform:admin", async () => {
    const before = await keyRows(T);
    const tokens = [
      await mintAdminToken({ scope: "mcp kb.read kb.write" }),
      await mintAdminToken({ scope: "platform:admins platform" }),
      await mintAdminToken({ scope: "" }),
    ];
    for (const token of tokens) {
      for (const route of routes(T)) {
        const answer = await admin(route.method, route.path, { token, body: route.body });
        expect(answer.status, `${route.method} ${route.path}`).toBe(403);
        expect(answer.body).toMatchObject({ error: "insufficient_scope", scope: "platform:admin" });
        expect(answer.headers.get("www-authenticate") ?? "").toContain('error="insufficient_scope"');
        expect(answer.headers.get("www-authenticate") ?? "").toContain('scope="platform:admin"');
      }
    }
    await expectUntouched(before);
  });

  it("an admin token that is expired, from another issuer or signed by an untrusted key: 401", async () => {
    const now = Math.floor(Date.now() / 1000);
    const attacker = JSON.parse(env.TEST_ATTACKER_JWK) as JWK;
    const forged = await new SignJWT({ scope: "platform:admin" })
      .setProtectedHeader({ alg: "ES256", kid: "test-es256", typ: "at+jwt" })
      .setIssuer(ISSUER)
      .setAudience(ADMIN_AUDIENCE)
      .setSubject("mallory")
      .setIssuedAt(now)
      .setExpirationTime(now + 600)
      .sign(await importJWK(attacker, "ES256"));
    const tokens = [
      await mintAdminToken({ ttl: -3600 }),
      await mintAdminToken({ claims: { iss: "https://other-issuer.test/" } }),
      forged,
    ];
    for (const token of tokens) {
      const answer = await admin("GET", `/admin/tenants/${T}`, { token });
      expect(answer.status).toBe(401);
      expect(answer.body).toEqual({ error: "invalid_token", error_description: "The access token is invalid." });
    }
    // A genuine admin token for a look-alike audience (trailing slash): told the audience the admin API expects.
    const lookAlike = await admin("GET", `/admin/tenants/${T}`, {
      token: await mintAdminToken({ aud: "https://kb.test/admin/" }),
    });
    expect(lookAlike.status).toBe(401);
    expect(lookAlike.body).toEqual({ error: "invalid_token", error_description: WRONG_AUDIENCE(ADMIN_AUDIENCE) });
  });

  it("an admin token is not a tenant token: 401 at /mcp and /v1/documents, even with a tenant claim", async () => {
    const tokens = [
      await mintAdminToken(),
      await mintAdminToken({ scope: "platform:admin mcp kb.read kb.write", claims: { tenant_id: T } }),
    ];
    for (const token of tokens) {
      const rpc = await mcpFetch({
        method: "POST",
        token,
        headers: { "mcp-protocol-version": "2025-11-25" },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "tools/call",
          params: { name: "whoami", arguments: {} },
        }),
      });
      expect(rpc.status).toBe(401);
      // The admin token is genuine, so the client is told /mcp wants its own audience (and nothing else).
      expect(await rpc.json()).toEqual({ error: "invalid_token", error_description: WRONG_AUDIENCE(RESOURCE) });
      const document = await readAs(token, "doc-1");
      expect(document.status).toBe(401);
      // The legacy session of the tenant is not reachable with it either.
      const inSession = await legacyWhoami(token, sessionId);
      expect(inSession.status).toBe(401);
    }
    // The admin audience really is the one these tokens carry: the plain one works on the admin API; the one with a
    // tenant claim is refused there too (exclusive roles, issue 11 item 3).
    expect((await admin("GET", `/admin/tenants/${T}`, { token: tokens[0] })).status).toBe(200);
    expect((await admin("GET", `/admin/tenants/${T}`, { token: tokens[1] })).status).toBe(401);
  });
});

function readAs(token: string, id: string): Promise<Response> {
  return mcpFetch({ method: "GET", token, path: `/v1/documents/${id}`, headers: { accept: "*/*" } });
}

describe("tenant path", () => {
  it("a tenant id that is not a lower-case DNS-label-like name is refused with 400, creating no object", async () => {
    const bad = [
      "..%2Fx",
      "%2E%2E%2Fx",
      "ACME",
      "Acme-co",
      `${T.toUpperCase()}`,
      "a",
      "-abc",
      "ab_c",
      "ab.c",
      "ab%20c",
      "ab%00",
      "a".repeat(64),
    ];
    for (const name of bad) {
      for (const route of routes(name).filter((r) => r.path.startsWith(`/admin/tenants/${name}`))) {
        const answer = await admin(route.method, route.path, { body: route.body });
        expect(answer.status, `${route.method} ${route.path}`).toBe(400);
        expect(answer.body).toMatchObject({ error: { data: { code: "ERR_BAD_REQUEST" } } });
      }
      expect(await tenantObjectExists(decodeURIComponent(name)), name).toBe(false);
    }
    expect(await tenantObjectExists(T.toUpperCase())).toBe(false);
  });

  it("a literal ../ is resolved by URL parsing before routing: it can only reach another admin route (404)", async () => {
    for (const path of ["/admin/tenants/../x", `/admin/tenants/../${T}`, "/admin/tenants/x/../../master/../x"]) {
      const answer = await admin("GET", path);
      expect(answer.status, path).toBe(404);
      expect(answer.body).toMatchObject({ error: "not_found" });
    }
  });
});

describe("offboarding needs confirmation", () => {
  it('without {"confirm": "<tenant>"}: 400, and nothing is destroyed', async () => {
    const before = await keyRows(T);
    const other = uniqueTenant("adm-other");
    const bodies: { body?: unknown; rawBody?: string }[] = [
      {},
      { body: {} },
      { body: { confirm: other } },
      { body: { confirm: T.toUpperCase() } },
      { body: { confirm: ` ${T}` } },
      { body: { confirm: true } },
      { body: { confirm: [T] } },
      { body: { Confirm: T } },
      { body: { tenant: T } },
      { body: T },
      { body: [T] },
      { rawBody: `{"confirm": "${T}"` },
      { rawBody: "confirm" },
    ];
    for (const request of bodies) {
      const answer = await admin("POST", `/admin/tenants/${T}/offboard`, request);
      expect(answer.status, JSON.stringify(request)).toBe(400);
      expect(answer.body).toMatchObject({ error: { data: { code: "ERR_BAD_REQUEST" } } });
      expect(answer.text).toContain("confirm");
    }
    // Confirming one tenant does not offboard another.
    const crossed = await admin("POST", `/admin/tenants/${other}/offboard`, { body: { confirm: T } });
    expect(crossed.status).toBe(400);
    await expectUntouched(before);
    expect((await tableRows(tenantStub(T), "mcp_sessions")).length).toBe(1);
    const listed = await admin("GET", "/admin/tenants");
    expect((listed.body as { tenants: { tenant: string; state: string }[] }).tenants).toContainEqual(
      expect.objectContaining({ tenant: T, state: "active" }),
    );
  });
});

describe("status", () => {
  it("shows key versions and epochs and counts, nothing else about keys", async () => {
    const answer = await admin("GET", `/admin/tenants/${T}`);
    expect(answer.status).toBe(200);
    expect(answer.headers.get("cache-control")).toBe("no-store");
    const status = answer.body as unknown as StatusOut;
    expect(status).toMatchObject({
      tenant: T,
      state: "active",
      atoms: ATOMS.length,
      documents: 3,
      rotation: null,
      receipt: null,
    });
    expect(status.keys).toEqual([{ version: 1, epoch: "t1", current: true, createdAt: expect.any(String) }]);
    expect(Object.keys(status.keys[0] ?? {}).sort()).toEqual(["createdAt", "current", "epoch", "version"]);
    expect(Date.parse(status.keys[0]?.createdAt ?? "")).toBeGreaterThan(Date.now() - 600_000);
    const rows = await keyRows(T);
    expect(rows.map(({ version, epoch }) => ({ version, epoch }))).toEqual([{ version: 1, epoch: "t1" }]);

    const listed = await admin("GET", "/admin/tenants");
    expect(listed.status).toBe(200);
    expect((listed.body as { tenants: unknown[] }).tenants).toContainEqual({
      tenant: T,
      state: "active",
      firstSeen: expect.any(String),
    });
  });

  it("follows a rotation (new current version) and an offboarding (no keys, receipt, refused rotation)", async () => {
    const u = uniqueTenant("adm-u");
    const other = await kbCaller(u);
    await other.ok("add_atoms", { atoms: ATOMS.slice(0, 2) });
    const keysSeen = await keyMaterial(u);

    const rotated = await admin("POST", `/admin/tenants/${u}/rotate`);
    expect(rotated.status).toBe(202);
    expect(rotated.body).toMatchObject({ rotation: { from: [1], to: 2, completedAt: null } });
    keysSeen.push(...(await keyMaterial(u)));
    const during = await admin("GET", `/admin/tenants/${u}`);
    const keys = (during.body as unknown as StatusOut).keys;
    // The old version may already be retired (the alarm runs by itself here); the new one is current.
    expect(keys.at(-1)).toMatchObject({ version: 2, epoch: "t1", current: true });
    expect(keys.filter((key) => key.current)).toHaveLength(1);
    expect(Object.keys(keys.at(-1) ?? {}).sort()).toEqual(["createdAt", "current", "epoch", "version"]);

    const offboarded = await admin("POST", `/admin/tenants/${u}/offboard`, { body: { confirm: u } });
    expect(offboarded.status).toBe(202);
    const receipt = (offboarded.body as { receipt: Record<string, unknown> }).receipt;
    expect(receipt).toMatchObject({ tenant: u, requestedBy: "operator-1", sessionsEnded: 0 });
    const again = await admin("POST", `/admin/tenants/${u}/offboard`, { body: { confirm: u } });
    expect(again.status).toBe(202);
    expect((again.body as { receipt: Record<string, unknown> }).receipt).toMatchObject({
      requestedAt: receipt.requestedAt,
      keysDestroyedAt: receipt.keysDestroyedAt,
      keyVersionsDestroyed: receipt.keyVersionsDestroyed,
    });

    const after = (await admin("GET", `/admin/tenants/${u}`)).body as unknown as StatusOut;
    expect(after.keys).toEqual([]);
    expect(after.state).toMatch(/^offboard(ing|ed)$/);
    expect(after.receipt).toMatchObject({ tenant: u, requestedBy: "operator-1" });
    expect(after.rotation).toBeNull();
    await checkNoKeyMaterial(keysSeen);
  });

  it("rotating an offboarded tenant is a refusal that says why (403 ERR_TENANT_OFFBOARDED), not a 500", async () => {
    const u = uniqueTenant("adm-gone");
    await (await kbCaller(u)).ok("add_atoms", { atoms: ATOMS.slice(0, 1) });
    expect((await admin("POST", `/admin/tenants/${u}/offboard`, { body: { confirm: u } })).status).toBe(202);
    const refused = await admin("POST", `/admin/tenants/${u}/rotate`);
    // The tenant object throws KbError(ERR_TENANT_OFFBOARDED); across the RPC boundary it loses its code.
    expect(refused.status, refused.text).toBe(403);
    expect(refused.body).toMatchObject({ error: { data: { code: "ERR_TENANT_OFFBOARDED" } } });
    expect((await keyRows(u)).length).toBe(0);
    expect((await tenantStatus(u)).rotation).toBeNull();
  });

  it("a malformed egress policy is a 400 that says why, not a 500 (same RPC error path)", async () => {
    for (const body of [{ origins: 5 }, { resources: "all" }, null]) {
      const answer = await admin("PUT", `/admin/tenants/${T}/egress`, { body });
      expect(answer.status, answer.text).toBe(400);
      expect(answer.body).toMatchObject({ error: { data: { code: "ERR_INVALID_PARAMS" } } });
    }
  });
});

/** Every byte string that must never leave the server for a tenant: wrapped keys, data keys, their subkeys, the embedder key. */
async function keyMaterial(tenant: string): Promise<Uint8Array[]> {
  return runInDurableObject(tenantStub(tenant), async (_instance, state) => {
    const master = MasterKeys.fromEnv(env);
    const keyring = new TenantKeyring(state.storage.sql, tenant, master);
    const out: Uint8Array[] = [];
    const rows = state.storage.sql
      .exec<{ version: number; epoch: string; wrapped: ArrayBuffer }>(`SELECT version, epoch, wrapped FROM tenant_keys`)
      .toArray();
    for (const row of rows) {
      const wrapped = new Uint8Array(row.wrapped);
      out.push(wrapped, wrapped.subarray(12));
      out.push(await unwrapKey(master, { tenant, version: row.version, epoch: row.epoch, wrapped }));
      for (const purpose of ["atoms", "blind-index", "handles", "request-state"] as KeyPurpose[]) {
        out.push(await keyring.subkey(row.version, purpose));
      }
    }
    // The local embedder's key: its wrapped row and the key itself.
    for (const row of state.storage.sql.exec<{ wrapped: ArrayBuffer }>(`SELECT wrapped FROM embedder_keys`).toArray()) {
      out.push(new Uint8Array(row.wrapped), (await keyring.embedderKey()) as Uint8Array);
    }
    return out;
  });
}

async function checkNoKeyMaterial(secrets: Uint8Array[]): Promise<void> {
  expect(secrets.length).toBeGreaterThan(0);
  const needles = [...secrets, masterSecret("t0"), masterSecret("t1")].flatMap(encodings);
  // The scan itself works: a response that did carry a key would be caught.
  const planted = `{"key":"${encodings(secrets[0] ?? new Uint8Array())[2]}"}`;
  expect(needles.some((needle) => planted.includes(needle))).toBe(true);
  for (const answer of answers) {
    const haystack = `${answer.text}\n${[...answer.headers].map(([k, v]) => `${k}: ${v}`).join("\n")}`;
    for (const needle of needles) expect(haystack.includes(needle), `key material in ${answer.text}`).toBe(false);
  }
}

describe("no key material in any admin response", () => {
  it("wrapped keys, data keys, subkeys and master secrets never appear", async () => {
    const secrets = await keyMaterial(T);
    expect(secrets.length).toBe(9);
    await admin("GET", `/admin/tenants/${T}`);
    await admin("GET", "/admin/tenants");
    await admin("GET", "/admin/master");
    const rewrap = await admin("POST", "/admin/master/rewrap");
    expect(rewrap.status).toBe(202);
    expect(rewrap.body).toMatchObject({ job: { epoch: "t1" } });
    const rotate = await admin("POST", `/admin/tenants/${T}/rotate`);
    expect(rotate.status).toBe(202);
    secrets.push(...(await keyMaterial(T)));
    await admin("GET", `/admin/tenants/${T}`);
    await admin("GET", "/admin/master");
    expect(answers.length).toBeGreaterThan(50);
    await checkNoKeyMaterial(secrets);
  });
});

describe("unknown tenants", () => {
  it("offboarding or rotating a tenant that never existed is a 404, and creates nothing", async () => {
    const ghost = `ghost-${crypto.randomUUID().slice(0, 8)}`;
    for (const action of ["offboard", "rotate"] as const) {
      const response = await exports.default.fetch(
        new Request(`https://kb.test/admin/tenants/${ghost}/${action}`, {
          method: "POST",
          headers: { authorization: `Bearer ${await mintAdminToken()}`, "content-type": "application/json" },
          body: JSON.stringify({ confirm: ghost }),
        }),
      );
      expect(response.status).toBe(404);
    }
    const registry = env.TENANT_REGISTRY.get(env.TENANT_REGISTRY.idFromName("registry"));
    expect((await registry.list("", 1000)).some((entry) => entry.tenant === ghost)).toBe(false);
  });
});
