import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { createRequestStateCodec, type ServerContext } from "@modelcontextprotocol/server";
import { describe, expect, it } from "vitest";
import type { Identity } from "../../src/auth/identity";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import { HandleCodec } from "../../src/mcp/handles";
import { base64url, fromBase64url } from "../../src/util/bytes";
import { modernRequest } from "../helpers/clients";
import { mcpFetch, rpcResult } from "../helpers/mcp-http";
import { mintToken } from "../helpers/tokens";

/**
 * Server-minted handles (src/mcp/handles.ts) and 2026-07-28 requestState (src/mcp/server-factory.ts) are bound to
 * tenant and subject: anything minted for one caller is refused for every other one.
 */

function identity(tenant: string, subject: string): Identity {
  const now = Math.floor(Date.now() / 1000);
  return { tenant, subject, scopes: ["mcp"], tokenId: null, expiresAt: now + 600, issuedAt: now };
}

function randomKey(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(32));
}

const NOW = Date.UTC(2026, 10, 27, 12, 0, 0);
const KIND = "cursor";
const DATA = { offset: 40, query: "café ✓", nested: { ids: [1, 2, 3] } };

/** The bytes of a handle, asserting the documented opaque `h2.<iv ‖ ciphertext ‖ tag>` shape. */
function bytesOf(handle: string): Uint8Array {
  const [prefix, body, ...rest] = handle.split(".");
  expect(prefix).toBe("h2");
  expect(rest).toEqual([]);
  const bytes = fromBase64url(body ?? "");
  expect(bytes).not.toBeNull();
  return bytes ?? new Uint8Array();
}

const handleOf = (bytes: Uint8Array) => `h2.${base64url(bytes)}`;

describe("HandleCodec", () => {
  const key = randomKey();
  const alice = identity("handles-acme", "alice");

  it("mint/open round trip returns the data, for the same tenant, subject and kind", async () => {
    const codec = await HandleCodec.create(key, alice);
    const handle = await codec.mint(KIND, DATA, 60, NOW);
    expect(handle).toMatch(/^h2\.[A-Za-z0-9_-]+$/);
    expect(await codec.open(KIND, handle, NOW)).toEqual(DATA);
    // A second codec built from the same key and identity (another request, another instance) accepts it too.
    const again = await HandleCodec.create(Uint8Array.from(key), identity("handles-acme", "alice"));
    expect(await again.open(KIND, handle, NOW + 1000)).toEqual(DATA);
    // Two mints of the same data differ (random IV): handles are not linkable by value.
    expect(await codec.mint(KIND, DATA, 60, NOW)).not.toBe(handle);
  });

  it("is opaque: tenant, subject, kind, expiry and data appear nowhere in the handle", async () => {
    const codec = await HandleCodec.create(key, alice);
    const data = { runId: "run-secret-7731", offset: 40 };
    const handle = await codec.mint(KIND, data, 60, NOW);
    const text = new TextDecoder("latin1").decode(bytesOf(handle));
    for (const needle of ["handles-acme", "alice", KIND, "run-secret-7731", String(NOW / 1000 + 60), '"t"', '"d"']) {
      expect(text).not.toContain(needle);
      expect(handle).not.toContain(needle);
      expect(handle).not.toContain(base64url(new TextEncoder().encode(needle)).slice(0, 8));
    }
  });

  it("accepts a handle minted under an older live key, and refuses it once that key is gone", async () => {
    const older = randomKey();
    const handle = await (await HandleCodec.create(older, alice)).mint(KIND, DATA, 60, NOW);
    // After a rotation: the current key first, the older live one after it.
    expect(await (await HandleCodec.create([key, older], alice)).open(KIND, handle, NOW)).toEqual(DATA);
    // New handles are minted under the current key.
    const fresh = await (await HandleCodec.create([key, older], alice)).mint(KIND, DATA, 60, NOW);
    expect(await (await HandleCodec.create(key, alice)).open(KIND, fresh, NOW)).toEqual(DATA);
    // The older version destroyed: its handles fail like garbage.
    expect(await (await HandleCodec.create(key, alice)).open(KIND, handle, NOW)).toBeNull();
    await expect(HandleCodec.create([], alice)).rejects.toThrow(RangeError);
  });

  it("refuses another tenant's identity, even under the same key", async () => {
    const handle = await (await HandleCodec.create(key, alice)).mint(KIND, DATA, 60, NOW);
    const otherTenant = await HandleCodec.create(key, identity("handles-globex", "alice"));
    expect(await otherTenant.open(KIND, handle, NOW)).toBeNull();
    // And with that tenant's own key, as in production (per-tenant secrets).
    const otherTenantOwnKey = await HandleCodec.create(randomKey(), identity("handles-globex", "alice"));
    expect(await otherTenantOwnKey.open(KIND, handle, NOW)).toBeNull();
    // The victim still opens it.
    expect(await (await HandleCodec.create(key, alice)).open(KIND, handle, NOW)).toEqual(DATA);
  });

  it("refuses another subject of the same tenant", async () => {
    const handle = await (await HandleCodec.create(key, alice)).mint(KIND, DATA, 60, NOW);
    const bob = await HandleCodec.create(key, identity("handles-acme", "bob"));
    expect(await bob.open(KIND, handle, NOW)).toBeNull();
    // Subjects that merely share a prefix are different subjects.
    const alice2 = await HandleCodec.create(key, identity("handles-acme", "alice2"));
    expect(await alice2.open(KIND, handle, NOW)).toBeNull();
  });

  it("refuses another kind", async () => {
    const codec = await HandleCodec.create(key, alice);
    const handle = await codec.mint(KIND, DATA, 60, NOW);
    expect(await codec.open("run", handle, NOW)).toBeNull();
    expect(await codec.open("", handle, NOW)).toBeNull();
    expect(await codec.open(KIND, handle, NOW)).toEqual(DATA);
  });

  it("expires: valid until the expiry second, refused from then on", async () => {
    const codec = await HandleCodec.create(key, alice);
    const handle = await codec.mint(KIND, DATA, 60, NOW);
    expect(await codec.open(KIND, handle, NOW + 59_999)).toEqual(DATA);
    expect(await codec.open(KIND, handle, NOW + 60_000)).toBeNull();
    expect(await codec.open(KIND, handle, NOW + 3_600_000)).toBeNull();
    // A handle minted already expired is never valid.
    expect(await codec.open(KIND, await codec.mint(KIND, DATA, 0, NOW), NOW)).toBeNull();
    expect(await codec.open(KIND, await codec.mint(KIND, DATA, -10, NOW), NOW)).toBeNull();
  });

  it("refuses any modified byte (IV, ciphertext or tag), truncation and extension", async () => {
    const codec = await HandleCodec.create(key, alice);
    const bytes = bytesOf(await codec.mint(KIND, DATA, 60, NOW));
    for (const index of [0, 11, 12, 20, bytes.length - 17, bytes.length - 1]) {
      const changed = Uint8Array.from(bytes);
      changed[index] = (changed[index] ?? 0) ^ 0x01;
      expect(await codec.open(KIND, handleOf(changed), NOW)).toBeNull();
    }
    expect(await codec.open(KIND, handleOf(bytes.subarray(0, bytes.length - 1)), NOW)).toBeNull();
    expect(await codec.open(KIND, handleOf(new Uint8Array([...bytes, 0])), NOW)).toBeNull();
    expect(await codec.open(KIND, handleOf(bytes.subarray(0, 27)), NOW)).toBeNull();
    expect(await codec.open(KIND, handleOf(bytes), NOW)).toEqual(DATA);
  });

  it("refuses a handle minted under a different key", async () => {
    const handle = await (await HandleCodec.create(randomKey(), alice)).mint(KIND, DATA, 60, NOW);
    expect(await (await HandleCodec.create(key, alice)).open(KIND, handle, NOW)).toBeNull();
  });

  it("refuses the old readable h1 format, garbage and non-strings", async () => {
    const codec = await HandleCodec.create(key, alice);
    const valid = await codec.mint(KIND, DATA, 60, NOW);
    const [, body] = valid.split(".");
    const h1Payload = base64url(
      new TextEncoder().encode(JSON.stringify({ t: "handles-acme", s: "alice", k: KIND, e: NOW / 1000 + 60, d: DATA })),
    );
    const garbage: unknown[] = [
      "",
      "h2",
      "h2.",
      "h2..",
      `h1.${h1Payload}.${"A".repeat(43)}`,
      `h1.${body}`,
      `H2.${body}`,
      `h2.${body}.extra`,
      `.${body}`,
      `h2.${body}!`,
      `h2.${body}=`,
      ` ${valid}`,
      `${valid}\n`,
      "not a handle at all",
      "h2.e30",
      12345,
      null,
      undefined,
      {},
      [valid],
      { toString: () => valid },
    ];
    for (const candidate of garbage) expect(await codec.open(KIND, candidate, NOW)).toBeNull();
    expect(await codec.open(KIND, valid, NOW)).toEqual(DATA);
  });

  it("refuses overlong input (over 4096 characters)", async () => {
    const codec = await HandleCodec.create(key, alice);
    expect(await codec.open(KIND, `h2.${"A".repeat(5000)}`, NOW)).toBeNull();
    expect(await codec.open(KIND, "x".repeat(1_000_000), NOW)).toBeNull();
    // mint refuses to produce a handle that open would refuse.
    await expect(codec.mint(KIND, { blob: "z".repeat(4000) }, 60, NOW)).rejects.toThrow(RangeError);
    // Just under the limit still works.
    const fits = await codec.mint(KIND, { blob: "z".repeat(2900) }, 60, NOW);
    expect(fits.length).toBeLessThanOrEqual(4096);
    expect(await codec.open(KIND, fits, NOW)).toEqual({ blob: "z".repeat(2900) });
  });

  it("refuses keys shorter than 256 bits", async () => {
    await expect(HandleCodec.create(new Uint8Array(31), alice)).rejects.toThrow(RangeError);
  });
});

/** The bind function of src/mcp/server-factory.ts, for a caller. */
function bindFor(tenant: string, subject: string) {
  return (ctx: ServerContext) => `${tenant}\0${subject}\0${ctx.mcpReq.method}`;
}

function ctxFor(method: string): ServerContext {
  return { mcpReq: { method } } as unknown as ServerContext;
}

describe("requestState codec bound to tenant, subject and method", () => {
  const key = randomKey();
  const codecFor = (tenant: string, subject: string, codecKey: Uint8Array = key) =>
    createRequestStateCodec<{ step: number }>({ key: codecKey, ttlSeconds: 600, bind: bindFor(tenant, subject) });

  it("verifies for the same tenant, subject and method", async () => {
    const state = await codecFor("rs-acme", "alice").mint({ step: 2 }, ctxFor("tools/call"));
    expect(await codecFor("rs-acme", "alice").verify(state, ctxFor("tools/call"))).toEqual({ step: 2 });
  });

  it("fails for another tenant (same key or its own key), another subject, or another method", async () => {
    const state = await codecFor("rs-acme", "alice").mint({ step: 2 }, ctxFor("tools/call"));
    await expect(codecFor("rs-globex", "alice").verify(state, ctxFor("tools/call"))).rejects.toThrow("bind");
    await expect(codecFor("rs-globex", "alice", randomKey()).verify(state, ctxFor("tools/call"))).rejects.toThrow(
      "mac",
    );
    await expect(codecFor("rs-acme", "bob").verify(state, ctxFor("tools/call"))).rejects.toThrow("bind");
    await expect(codecFor("rs-acme", "alice").verify(state, ctxFor("prompts/get"))).rejects.toThrow("bind");
    // The NUL separators keep ("a", "b\0c") and ("a\0b", "c") apart; the pattern forbids NUL in ids anyway.
    await expect(codecFor("rs-acme\0alice", "").verify(state, ctxFor("tools/call"))).rejects.toThrow("bind");
    // The victim's state is still good.
    expect(await codecFor("rs-acme", "alice").verify(state, ctxFor("tools/call"))).toEqual({ step: 2 });
  });

  it("fails for a tampered state, and the binding value is not readable from the wire", async () => {
    const state = await codecFor("rs-acme", "alice").mint({ step: 2 }, ctxFor("tools/call"));
    const dot = state.lastIndexOf(".");
    const body = state.slice(3, dot);
    const envelope = JSON.parse(new TextDecoder().decode(fromBase64url(body) ?? new Uint8Array())) as Record<
      string,
      unknown
    >;
    expect(envelope.p).toEqual({ step: 2 });
    expect(JSON.stringify(envelope)).not.toContain("alice");
    expect(JSON.stringify(envelope)).not.toContain("rs-acme");
    const forged = `v1.${base64url(new TextEncoder().encode(JSON.stringify({ ...envelope, p: { step: 99 } })))}${state.slice(dot)}`;
    await expect(codecFor("rs-acme", "alice").verify(forged, ctxFor("tools/call"))).rejects.toThrow("mac");
  });
});

describe("requestState through the real server (2026-07-28 tools/call)", () => {
  async function requestStateKey(tenant: string): Promise<Uint8Array> {
    const stub = env.TENANT_SERVER.get(env.TENANT_SERVER.idFromName(tenant));
    // The request-state key is derived from the tenant's current data key (so a crypto-shred destroys it too).
    return runInDurableObject(stub, async (_instance, state) => {
      const keyring = new TenantKeyring(state.storage.sql, tenant, MasterKeys.fromEnv(env));
      const { version } = await keyring.current();
      return keyring.subkey(version, "request-state");
    });
  }

  async function callWithState(token: string, requestState: string | undefined) {
    const raw = modernRequest(11, "tools/call", {
      name: "whoami",
      arguments: {},
      ...(requestState === undefined ? {} : { requestState }),
    });
    const response = await mcpFetch({ method: "POST", token, headers: raw.headers, body: raw.body });
    return { status: response.status, body: await rpcResult(response) };
  }

  it("accepts state minted for the caller and refuses it for another subject, tenant or method", async () => {
    const [tenantA, tenantB] = ["rs-live-acme", "rs-live-globex"];
    const alice = await mintToken({ tenant: tenantA, sub: "alice" });
    const bob = await mintToken({ tenant: tenantA, sub: "bob" });
    const aliceB = await mintToken({ tenant: tenantB, sub: "alice" });
    // First calls create each tenant's secrets.
    expect((await callWithState(alice, undefined)).body).toMatchObject({
      result: { structuredContent: { tenant: tenantA } },
    });
    expect((await callWithState(aliceB, undefined)).body).toMatchObject({
      result: { structuredContent: { tenant: tenantB } },
    });
    const keyA = await requestStateKey(tenantA);
    const keyB = await requestStateKey(tenantB);
    expect(base64url(keyA)).not.toBe(base64url(keyB));

    const mint = (codecKey: Uint8Array, tenant: string, subject: string, method: string) =>
      createRequestStateCodec({ key: codecKey, ttlSeconds: 600, bind: bindFor(tenant, subject) }).mint(
        { step: 1 },
        ctxFor(method),
      );
    const forAlice = await mint(keyA, tenantA, "alice", "tools/call");

    // The owner: verified, and the tool runs.
    const ok = await callWithState(alice, forAlice);
    expect(ok.body).toMatchObject({ id: 11, result: { structuredContent: { tenant: tenantA, subject: "alice" } } });

    const refused = { id: 11, error: { code: -32602, message: "Invalid or expired requestState" } };
    // Another subject of the same tenant (same key): bind mismatch.
    expect((await callWithState(bob, forAlice)).body).toMatchObject(refused);
    // Another tenant: its key differs.
    expect((await callWithState(aliceB, forAlice)).body).toMatchObject(refused);
    // Even minted under tenant B's key, A's binding is refused by B.
    expect((await callWithState(aliceB, await mint(keyB, tenantA, "alice", "tools/call"))).body).toMatchObject(refused);
    // Bound to another method.
    expect((await callWithState(alice, await mint(keyA, tenantA, "alice", "prompts/get"))).body).toMatchObject(refused);
    // Garbage.
    expect((await callWithState(alice, "v1.e30.AAAA")).body).toMatchObject(refused);
    // B's own correctly bound state works for B, and A's owner still works afterwards.
    const forAliceB = await mint(keyB, tenantB, "alice", "tools/call");
    expect((await callWithState(aliceB, forAliceB)).body).toMatchObject({
      result: { structuredContent: { tenant: tenantB, subject: "alice" } },
    });
    expect((await callWithState(alice, forAlice)).body).toMatchObject({
      result: { structuredContent: { tenant: tenantA, subject: "alice" } },
    });
  });
});
