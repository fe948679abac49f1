import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { importJWK, type JWTPayload, SignJWT } from "jose";
import { expect } from "vitest";
import { MasterKeys } from "../../src/crypto/master-keys";
import type { TenantServer } from "../../src/tenant/tenant-server";
import { initializeBody, LEGACY_VERSION, mcpFetch, rpcResult } from "./mcp-http";
import { BASE, ISSUER, privateJwk } from "./tokens";

/**
 * Platform-admin helpers for the lifecycle tests: admin tokens (same trusted test key as mintToken, but the admin
 * audience, `platform:admin`, no tenant claim), calls to /admin/..., the master key secrets of vitest.config.ts,
 * and driving a Durable Object's alarm until its job is done.
 */
export const ADMIN_AUDIENCE = `${BASE}/admin`;
export const ADMIN_SCOPE = "platform:admin";

export interface AdminTokenOptions {
  readonly sub?: string;
  /** Default `platform:admin`. */
  readonly scope?: string;
  /** Default the admin audience. */
  readonly aud?: string | string[];
  readonly ttl?: number;
  /** Extra claims (e.g. a tenant claim), merged last. */
  readonly claims?: JWTPayload;
}

export async function mintAdminToken(options: AdminTokenOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload: JWTPayload = {
    iss: ISSUER,
    aud: options.aud ?? ADMIN_AUDIENCE,
    sub: options.sub ?? "operator-1",
    iat: now,
    exp: now + (options.ttl ?? 600),
    jti: crypto.randomUUID(),
    scope: options.scope ?? ADMIN_SCOPE,
    ...options.claims,
  };
  return new SignJWT(payload)
    .setProtectedHeader({ alg: "ES256", kid: "test-es256", typ: "at+jwt" })
    .sign(await importJWK(await privateJwk("ES256"), "ES256"));
}

export interface AdminAnswer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly body: Record<string, unknown>;
}

/** One admin API call, in-process. `token: null` sends no Authorization header. */
export async function adminCall(
  method: "GET" | "POST" | "PUT" | "DELETE",
  path: string,
  options: { token?: string | null; body?: unknown; rawBody?: string } = {},
): Promise<AdminAnswer> {
  const token = options.token === undefined ? await mintAdminToken() : options.token;
  const headers = new Headers();
  if (token !== null) headers.set("authorization", `Bearer ${token}`);
  let body: string | undefined;
  if (options.rawBody !== undefined) body = options.rawBody;
  else if (options.body !== undefined) body = JSON.stringify(options.body);
  if (body !== undefined) headers.set("content-type", "application/json");
  const response = await exports.default.fetch(new Request(`${BASE}${path}`, { method, headers, body }));
  const text = await response.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = {};
  }
  return { status: response.status, headers: response.headers, text, body: parsed };
}

/** Shape of GET /admin/tenants/:tenant (src/tenant/tenant-status.ts TenantStatus), as JSON. */
export interface StatusOut {
  readonly tenant: string;
  readonly state: string;
  readonly keys: { version: number; epoch: string; createdAt: string; current: boolean }[];
  readonly atoms: number;
  readonly documents: number;
  readonly rotation: {
    from: number[];
    to: number;
    resealedAtoms: number;
    reencryptedDocuments: number;
    completedAt: string | null;
    destroyedVersions: number[];
  } | null;
  readonly receipt: ReceiptOut | null;
}

export interface ReceiptOut {
  readonly tenant: string;
  readonly requestedBy: string;
  readonly keysDestroyedAt: string;
  readonly keyVersionsDestroyed: number[];
  readonly masterEpochsAtShred: string[];
  readonly sessionsEnded: number;
  readonly purged: {
    atoms: number;
    vectors: number;
    documents: number;
    r2Objects: number;
    cacheRows: number;
    runObjects: number;
  };
  readonly residuePurgedAt: string | null;
  readonly purgeBatches: number;
  readonly completedAt: string | null;
}

export async function tenantStatus(tenant: string): Promise<StatusOut> {
  const answer = await adminCall("GET", `/admin/tenants/${tenant}`);
  expect(answer.status, answer.text).toBe(200);
  return answer.body as unknown as StatusOut;
}

/** The raw secret of a master key epoch configured in vitest.config.ts (MASTER_KEY_T0, MASTER_KEY_T1). */
export function masterSecret(epoch: "t0" | "t1"): Uint8Array {
  const value = (env as unknown as Record<string, unknown>)[`MASTER_KEY_${epoch.toUpperCase()}`];
  if (typeof value !== "string") throw new Error(`no MASTER_KEY_${epoch.toUpperCase()} binding`);
  return Uint8Array.from(atob(value), (char) => char.charCodeAt(0));
}

/** MasterKeys holding only the given epochs (an epoch left out is a deleted secret); the first one is current. */
export function masterKeys(...epochs: ("t0" | "t1")[]): MasterKeys {
  const [current] = epochs;
  if (!current) throw new Error("at least one epoch");
  return new MasterKeys(new Map(epochs.map((epoch) => [epoch, masterSecret(epoch)])), current);
}

export function tenantStub(tenant: string) {
  return env.TENANT_SERVER.get(env.TENANT_SERVER.idFromName(tenant));
}

export function registryStub() {
  return env.TENANT_REGISTRY.get(env.TENANT_REGISTRY.idFromName("registry"));
}

/** Runs the object's alarm until none is scheduled; returns how many steps ran. Fails after `max` steps. */
export async function drainAlarms(stub: DurableObjectStub, max = 200): Promise<number> {
  let steps = 0;
  while (await runDurableObjectAlarm(stub)) {
    steps++;
    if (steps > max) throw new Error(`alarm still scheduled after ${max} steps`);
  }
  return steps;
}

/**
 * Miniflare fires a scheduled alarm on its own within milliseconds, so a job would race the test. Holding a tenant
 * object's alarms replaces its `alarm` handler (the test pool looks the handler up on the instance each time) with
 * one that only re-arms the alarm an hour ahead; `stepTenantAlarm` then runs the real handler, one step at a time.
 * An evicted object comes back with the real handler, so `stepTenantAlarm` holds again on every call.
 */
const HELD = Symbol("alarms held");
const HOLD_MS = 3_600_000;

export async function holdTenantAlarms(tenant: string): Promise<void> {
  await runInDurableObject(tenantStub(tenant), (instance: TenantServer, state) => {
    const held = instance as TenantServer & { [HELD]?: true };
    if (held[HELD]) return;
    held[HELD] = true;
    instance.alarm = async () => {
      await state.storage.setAlarm(Date.now() + HOLD_MS);
    };
  });
}

/**
 * Runs one step of the tenant's real alarm handler (whether or not an alarm is scheduled) and reports whether it
 * asked for another. A requested next step is moved an hour ahead at once, so nothing fires on its own between
 * steps (an automatic invocation in flight would also keep evictDurableObject waiting).
 */
export async function stepTenantAlarm(tenant: string): Promise<{ rescheduled: boolean }> {
  await holdTenantAlarms(tenant);
  return runInDurableObject(tenantStub(tenant), async (instance: TenantServer, state) => {
    await state.storage.deleteAlarm();
    const real = (Object.getPrototypeOf(instance) as TenantServer).alarm;
    await real.call(instance);
    const rescheduled = (await state.storage.getAlarm()) !== null;
    if (rescheduled) await state.storage.setAlarm(Date.now() + HOLD_MS);
    return { rescheduled };
  });
}

export function scheduledAlarm(tenant: string): Promise<number | null> {
  return runInDurableObject(tenantStub(tenant), (_instance, state) => state.storage.getAlarm());
}

export interface RewrapJobOut {
  readonly epoch: string;
  readonly tenantsDone: number;
  readonly keysRewrapped: number;
  readonly failures: string[];
  readonly completedAt: string | null;
}

/** POST /admin/master/rewrap, then runs the registry's alarm until GET /admin/master reports the job complete. */
export async function rewrapToCompletion(): Promise<RewrapJobOut> {
  const started = await adminCall("POST", "/admin/master/rewrap");
  expect(started.status, started.text).toBe(202);
  for (let i = 0; i < 100; i++) {
    await runDurableObjectAlarm(registryStub());
    const job = ((await adminCall("GET", "/admin/master")).body as { job: RewrapJobOut | null }).job;
    if (job?.completedAt) return job;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error("the rewrap job did not complete");
}

/** Every row of a table in the tenant object's SQLite (all tenants' rows, which must be only its own). */
export function tableRows(stub: DurableObjectStub, table: string): Promise<Record<string, SqlStorageValue>[]> {
  return runInDurableObject(stub, (_instance, state) =>
    state.storage.sql.exec<Record<string, SqlStorageValue>>(`SELECT * FROM ${table}`).toArray(),
  );
}

/** Byte encodings to scan text for: standard base64, base64url (unpadded) and lower/upper-case hex. */
export function encodings(bytes: Uint8Array): string[] {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  const b64 = btoa(binary);
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return [
    b64,
    b64.replace(/=+$/, ""),
    b64.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""),
    hex,
    hex.toUpperCase(),
  ];
}

/** All objects under an R2 prefix (every page). */
export async function r2Keys(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.DOCS.list({ prefix, ...(cursor ? { cursor } : {}) });
    keys.push(...page.objects.map((object) => object.key));
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return keys;
}

/**
 * The response with its body read to the end: an unread body from a tenant object keeps the object referenced, and
 * evictDurableObject then waits for it in vain.
 */
async function buffered(response: Promise<Response>): Promise<Response> {
  const got = await response;
  const body = got.body ? await got.arrayBuffer() : null;
  return new Response(got.status === 204 || got.status === 304 ? null : body, {
    status: got.status,
    headers: got.headers,
  });
}

/** PUT /v1/documents/:id with a tenant token (response body already read). */
export function putDocument(
  token: string,
  id: string,
  bytes: Uint8Array,
  contentType = "text/plain",
): Promise<Response> {
  return buffered(
    exports.default.fetch(
      new Request(`${BASE}/v1/documents/${id}`, {
        method: "PUT",
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": contentType,
          "content-length": String(bytes.byteLength),
        },
        body: bytes,
      }),
    ),
  );
}

/** GET, HEAD or DELETE /v1/documents/:id with a tenant token (response body already read). */
export function documentRequest(token: string, method: "GET" | "DELETE" | "HEAD", id: string): Promise<Response> {
  return buffered(
    exports.default.fetch(
      new Request(`${BASE}/v1/documents/${id}`, { method, headers: { authorization: `Bearer ${token}` } }),
    ),
  );
}

/** GET a whole document; fails the test unless it is 200. */
export async function readDocument(token: string, id: string): Promise<Uint8Array> {
  const response = await documentRequest(token, "GET", id);
  const body = new Uint8Array(await response.arrayBuffer());
  expect(response.status, `GET ${id}: ${new TextDecoder().decode(body.subarray(0, 300))}`).toBe(200);
  return body;
}

/** Opens a 2025-11-25 (sessionful) MCP session; returns its id. */
export async function openLegacySession(token: string): Promise<string> {
  const response = await mcpFetch({ method: "POST", token, body: initializeBody() });
  expect(response.status).toBe(200);
  expect(await rpcResult(response)).toMatchObject({ result: { protocolVersion: LEGACY_VERSION } });
  const sessionId = response.headers.get("mcp-session-id") ?? "";
  expect(sessionId).toMatch(/^[A-Za-z0-9_-]{43}$/);
  return sessionId;
}

/** whoami inside a 2025 session (response body already read). */
export function legacyWhoami(token: string, sessionId: string): Promise<Response> {
  return buffered(
    mcpFetch({
      method: "POST",
      token,
      headers: { "mcp-session-id": sessionId, "mcp-protocol-version": LEGACY_VERSION },
      body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "whoami", arguments: {} } }),
    }),
  );
}
