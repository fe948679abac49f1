import { runInDurableObject } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { JWKS_MAX_AGE_S, JwksMemo } from "../../src/exchange/jwks-cache";
import type { TenantRegistry } from "../../src/tenant/registry";
import { registryStub } from "../helpers/admin";
import { rotateSigningKey } from "../helpers/exchange";
import { BASE } from "../helpers/tokens";

/**
 * Issue 11 item 12: the registry singleton keeps its imported signing key for the object's lifetime, and the
 * unauthenticated JWKS is cached at the edge (per-isolate memo + Cache API), so a flood never reaches the object.
 */
const jwksRequest = (query = "") => exports.default.fetch(new Request(`${BASE}/.well-known/jwks.json${query}`));

/**
 * Counts the registry's jwks() calls while `body` runs. RPC dispatch looks methods up on the class prototype, so the
 * prototype's method is wrapped for the duration and restored after.
 */
async function countRegistryJwks(body: () => Promise<void>): Promise<number> {
  let calls = 0;
  let restore = () => {};
  await runInDurableObject(registryStub(), (instance: TenantRegistry) => {
    const proto = Object.getPrototypeOf(instance) as TenantRegistry;
    const real = proto.jwks;
    proto.jwks = async function (this: TenantRegistry) {
      calls++;
      return real.call(this);
    };
    restore = () => {
      proto.jwks = real;
    };
  });
  try {
    await body();
  } finally {
    restore();
  }
  return calls;
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe("JWKS edge cache", () => {
  it("a flood of 60 requests (with cache-busting queries) reaches the registry object at most once", async () => {
    await rotateSigningKey(); // a key exists, and the caches were just cleared
    const calls = await countRegistryJwks(async () => {
      const answers = await Promise.all(Array.from({ length: 60 }, (_, i) => jwksRequest(i % 2 ? `?bust=${i}` : "")));
      const bodies = new Set<string>();
      for (const answer of answers) {
        expect(answer.status).toBe(200);
        expect(answer.headers.get("cache-control")).toBe(`public, max-age=${JWKS_MAX_AGE_S}`);
        expect(answer.headers.get("content-type")).toMatch(/^application\/json/);
        bodies.add(await answer.text());
      }
      expect(bodies.size).toBe(1);
      expect((JSON.parse([...bodies][0] ?? "{}") as { keys: unknown[] }).keys.length).toBeGreaterThan(0);
    });
    expect(calls).toBeLessThanOrEqual(1);
    // Control: the counter does see a call that reaches the object.
    expect(await countRegistryJwks(async () => void (await registryStub().jwks()))).toBe(1);
  });

  it("a rotation is published at once in this location (the caches are cleared by the admin route)", async () => {
    const before = (await (await jwksRequest()).json()) as { keys: { kid: string }[] };
    const rotated = await rotateSigningKey();
    expect(rotated.status).toBe(200);
    const after = (await (await jwksRequest()).json()) as { keys: { kid: string }[] };
    expect(after.keys.map((key) => key.kid)).toContain(rotated.body.kid);
    expect(after.keys.length).toBeGreaterThanOrEqual(before.keys.length);
  });

  it("the per-isolate memo: one load for concurrent callers, reloaded after its TTL, a failed load not kept", async () => {
    let clock = 0;
    let loads = 0;
    const memo = new JwksMemo(1000, () => clock);
    const load = async () => {
      loads++;
      return { keys: [loads] };
    };
    const first = await Promise.all(Array.from({ length: 20 }, () => memo.get(load)));
    expect(loads).toBe(1);
    expect(new Set(first.map((value) => JSON.stringify(value))).size).toBe(1);
    clock = 999;
    await memo.get(load);
    expect(loads).toBe(1);
    clock = 1000;
    expect(await memo.get(load)).toEqual({ keys: [2] });
    const failing = new JwksMemo(1000, () => clock);
    await expect(failing.get(() => Promise.reject(new Error("down")))).rejects.toThrow("down");
    expect(await failing.get(load)).toEqual({ keys: [3] });
  });
});

describe("the registry keeps its imported signing key", () => {
  it("signing five exchanged tokens unwraps and imports nothing after the first", async () => {
    await runInDurableObject(registryStub(), async (instance: TenantRegistry) => {
      await instance.signExchangeToken({ sub: "warm" }, BASE, 60);
      const importKey = vi.spyOn(crypto.subtle, "importKey");
      const decrypt = vi.spyOn(crypto.subtle, "decrypt");
      for (let i = 0; i < 5; i++) await instance.signExchangeToken({ sub: `s${i}` }, BASE, 60);
      expect(importKey).not.toHaveBeenCalled();
      expect(decrypt).not.toHaveBeenCalled();
      // A rotation changes the active kid: the new key is imported once.
      await instance.rotateSigningKey();
      importKey.mockClear();
      await instance.signExchangeToken({ sub: "after" }, BASE, 60);
      await instance.signExchangeToken({ sub: "after-2" }, BASE, 60);
      expect(importKey.mock.calls.filter(([format]) => format === "jwk").length).toBe(1);
    });
  });
});
