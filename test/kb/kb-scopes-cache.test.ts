import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import { AtomCipher } from "../../src/kb/atom-cipher";
import { type AiBinding, type Embedder, hashEmbed, WorkersAiEmbedder } from "../../src/kb/embedder";
import { contentHash, EmbeddingCache } from "../../src/kb/embedding-cache";
import { KnowledgeBase } from "../../src/kb/knowledge-base";
import { VectorSealer } from "../../src/kb/vector-pages";
import { MODERN_VERSION } from "../helpers/clients";
import { type KbCaller, kbCaller, type RpcAnswer, type StatsOut, uniqueTenant } from "../helpers/kb-client";
import { localIndex } from "../helpers/local-index";
import { mcpFetch } from "../helpers/mcp-http";

/**
 * Scopes: kb.read for reads, kb.write for writes, checked by the tenant object before dispatch (HTTP 403
 * insufficient_scope naming the missing scope); a refused write writes nothing.
 * Embedding cache: per tenant, in the tenant object's own SQLite; a refused batch leaves no cache rows.
 */

const stubFor = (tenant: string) => env.TENANT_SERVER.get(env.TENANT_SERVER.idFromName(tenant));
const TABLES = ["atoms", "atom_tags", "vector_rows", "embedding_cache"] as const;

async function tableCounts(tenant: string): Promise<Record<string, number>> {
  return runInDurableObject(stubFor(tenant), (_instance, state) => {
    const out: Record<string, number> = {};
    for (const table of TABLES) {
      out[table] = state.storage.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table}`).one().n;
    }
    return out;
  });
}

function expectInsufficientScope(answer: RpcAnswer, scope: string): void {
  expect(answer.status, answer.text).toBe(403);
  const challenge = answer.headers.get("www-authenticate") ?? "";
  expect(challenge).toMatch(/^Bearer /);
  expect(challenge).toContain('error="insufficient_scope"');
  expect(challengeScopes(challenge)).toContain(scope);
  expect(challenge).toContain('resource_metadata="https://kb.test/.well-known/oauth-protected-resource/mcp"');
  expect(answer.body).toEqual({
    error: "insufficient_scope",
    error_description: `This request requires scope: ${scope}`,
    scope,
  });
}

describe("tool scopes", () => {
  const tenant = uniqueTenant("scopes");
  let writer: KbCaller;
  let reader: KbCaller;
  let bare: KbCaller;
  let writeOnly: KbCaller;

  beforeAll(async () => {
    writer = await kbCaller(tenant, { sub: "writer", scope: "mcp kb.read kb.write" });
    reader = await kbCaller(tenant, { sub: "reader", scope: "mcp kb.read" });
    bare = await kbCaller(tenant, { sub: "bare", scope: "mcp" });
    writeOnly = await kbCaller(tenant, { sub: "ingest", scope: "mcp kb.write" });
    await writer.ok("add_atoms", {
      atoms: [
        { id: "keep-1", text: "Scopes decide who may write to the knowledge base", tags: ["auth"] },
        { id: "keep-2", text: "Readers may search but never delete" },
      ],
    });
  });

  it("kb.read without kb.write: add_atoms is 403 naming kb.write, and nothing is written", async () => {
    const before = await tableCounts(tenant);
    const answer = await reader.rpc("tools/call", {
      name: "add_atoms",
      arguments: { atoms: [{ id: "sneaky", text: "written by a reader", tags: ["sneaky"] }] },
    });
    expectInsufficientScope(answer, "kb.write");
    expect(await tableCounts(tenant)).toEqual(before);
    const got = await reader.call("get_atom", { id: "sneaky" });
    expect(got.isError).toBe(true);
    expect((await reader.ok<StatsOut>("kb_stats", {})).atoms).toBe(2);
  });

  it("kb.read without kb.write: delete_atoms is 403 naming kb.write, and nothing is deleted", async () => {
    const before = await tableCounts(tenant);
    const answer = await reader.rpc("tools/call", { name: "delete_atoms", arguments: { ids: ["keep-1", "keep-2"] } });
    expectInsufficientScope(answer, "kb.write");
    expect(await tableCounts(tenant)).toEqual(before);
    const got = await reader.ok<{ atom: { id: string } }>("get_atom", { id: "keep-1" });
    expect(got.atom.id).toBe("keep-1");
  });

  it("kb.read: every read works", async () => {
    const found = await reader.ok<{ results: { id: string }[] }>("search", { query: "who may write", top_k: 1 });
    expect(found.results[0]?.id).toBe("keep-1");
    expect(await reader.ok("get_atom", { id: "keep-2" })).toMatchObject({ atom: { id: "keep-2" } });
    const listed = await reader.ok<{ atoms: { id: string }[] }>("list_atoms", {});
    expect(listed.atoms.map((atom) => atom.id)).toEqual(["keep-1", "keep-2"]);
    expect(await reader.ok("kb_stats", {})).toMatchObject({ atoms: 2 });
    const resource = await reader.rpc("resources/read", { uri: "atom://keep-1" });
    expect(resource.status).toBe(200);
    expect(resource.body).toMatchObject({ result: { contents: [{ uri: "atom://keep-1" }] } });
  });

  it("mcp only: every read is 403 naming kb.read", async () => {
    const reads: [string, Record<string, unknown>][] = [
      ["tools/call", { name: "search", arguments: { query: "scopes" } }],
      ["tools/call", { name: "get_atom", arguments: { id: "keep-1" } }],
      ["tools/call", { name: "list_atoms", arguments: {} }],
      ["tools/call", { name: "kb_stats", arguments: {} }],
      ["resources/read", { uri: "atom://keep-1" }],
    ];
    for (const [method, params] of reads) {
      const answer = await bare.rpc(method, params);
      expectInsufficientScope(answer, "kb.read");
      expect(answer.text).not.toContain("Scopes decide");
    }
  });

  it("mcp only: writes are 403 naming kb.write; scope-free methods still work", async () => {
    expectInsufficientScope(
      await bare.rpc("tools/call", { name: "add_atoms", arguments: { atoms: [{ text: "nope" }] } }),
      "kb.write",
    );
    expectInsufficientScope(
      await bare.rpc("tools/call", { name: "delete_atoms", arguments: { ids: ["keep-1"] } }),
      "kb.write",
    );
    const tools = await bare.rpc("tools/list", {});
    expect(tools.status).toBe(200);
    const names = ((tools.body.result as { tools: { name: string }[] }).tools ?? []).map((tool) => tool.name);
    // Only what the token allows is offered; the refusals above still name the scope (step-up).
    expect(names).toEqual(["whoami"]);
    expect(await bare.ok("whoami", {})).toMatchObject({ tenant, subject: "bare" });
    expect((await tableCounts(tenant)).atoms).toBe(2);
  });

  it("kb.write without kb.read: writes work, reads are 403 naming kb.read", async () => {
    expect(await writeOnly.ok("add_atoms", { atoms: [{ id: "ingested", text: "ingest only" }] })).toEqual({
      added: ["ingested"],
      replaced: [],
    });
    expectInsufficientScope(
      await writeOnly.rpc("tools/call", { name: "search", arguments: { query: "ingest" } }),
      "kb.read",
    );
    expectInsufficientScope(await writeOnly.rpc("resources/read", { uri: "atom://ingested" }), "kb.read");
    expect(await writeOnly.ok("delete_atoms", { ids: ["ingested"] })).toEqual({ deleted: ["ingested"], notFound: [] });
  });

  it("a body with a duplicated tool name is judged by the name that is dispatched", async () => {
    // JSON.parse keeps the last duplicate key; the scope check and the dispatcher see the same parsed body.
    const before = await tableCounts(tenant);
    const meta = {
      "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
      "io.modelcontextprotocol/clientInfo": { name: "raw", version: "0" },
      "io.modelcontextprotocol/clientCapabilities": {},
    };
    const body = `{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"search","name":"add_atoms","arguments":{"atoms":[{"id":"dupkey","text":"dup key write"}]},"_meta":${JSON.stringify(meta)}}}`;
    const response = await mcpFetch({
      method: "POST",
      token: reader.token,
      headers: { "mcp-method": "tools/call", "mcp-name": "add_atoms", "mcp-protocol-version": MODERN_VERSION },
      body,
    });
    expect(response.status).toBe(403);
    expect(challengeScopes(response.headers.get("www-authenticate") ?? "")).toContain("kb.write");
    expect(await tableCounts(tenant)).toEqual(before);
  });

  it("a token without the endpoint scope mcp is refused at the edge", async () => {
    const noMcp = await kbCaller(tenant, { sub: "nomcp", scope: "kb.read kb.write" });
    const answer = await noMcp.rpc("tools/call", { name: "search", arguments: { query: "scopes" } });
    expectInsufficientScope(answer, "mcp");
  });
});

/** A fake Workers AI binding: deterministic 384-dim (or `dims`) vectors, and a record of every call. */
function fakeAi(dims = 384): { binding: AiBinding; calls: string[][] } {
  const calls: string[][] = [];
  const binding: AiBinding = {
    async run(_model, input) {
      calls.push([...input.text]);
      return { data: input.text.map((text) => Array.from(hashEmbed(`fake ${text}`, dims))) };
    },
  };
  return { binding, calls };
}

function buildKb(
  state: DurableObjectState,
  tenant: string,
  embedder: Embedder,
  options: { maxAtoms?: number; failCommit?: boolean } = {},
): KnowledgeBase {
  const sql = state.storage.sql;
  const keyring = new TenantKeyring(sql, tenant, MasterKeys.fromEnv(env));
  return new KnowledgeBase({
    sql,
    transaction: (fn) =>
      state.storage.transactionSync(() => {
        const result = fn();
        if (options.failCommit) throw new Error("injected failure at commit");
        return result;
      }),
    tenant,
    store: localIndex(sql, tenant, 384, keyring),
    cipher: new AtomCipher(keyring, tenant),
    embedder,
    cache: new EmbeddingCache(sql, tenant, new VectorSealer(keyring, tenant)),
    maxAtoms: options.maxAtoms ?? 1000,
  });
}

function cacheOf(state: DurableObjectState, tenant: string): EmbeddingCache {
  const keyring = new TenantKeyring(state.storage.sql, tenant, MasterKeys.fromEnv(env));
  return new EmbeddingCache(state.storage.sql, tenant, new VectorSealer(keyring, tenant));
}

function cacheRows(state: DurableObjectState): { tenant: string; model: string; content_hash: string }[] {
  return state.storage.sql
    .exec<{ tenant: string; model: string; content_hash: string }>(
      `SELECT tenant, model, content_hash FROM embedding_cache ORDER BY tenant, model, content_hash`,
    )
    .toArray();
}

describe("embedding cache", () => {
  const tenantA = uniqueTenant("cache-a");
  const tenantB = uniqueTenant("cache-b");
  const SAME = "The same paragraph, embedded by both tenants.";
  const fake = fakeAi();
  const embedder = new WorkersAiEmbedder(fake.binding);

  it("adding the same text twice in A calls the model once", async () => {
    await runInDurableObject(stubFor(tenantA), async (_instance, state) => {
      const kb = buildKb(state, tenantA, embedder);
      await kb.add([{ id: "a1", text: SAME }]);
      expect(fake.calls).toEqual([[SAME]]);
      await kb.add([{ id: "a2", text: SAME }]);
      expect(fake.calls.length).toBe(1);
      // Replacing an atom with the same text: still cached.
      await kb.add([{ id: "a1", text: SAME, tags: ["retagged"] }]);
      expect(fake.calls.length).toBe(1);
      // Two copies of one new text in one batch: the model sees it once.
      await kb.add([
        { id: "a3", text: "twins" },
        { id: "a4", text: "twins" },
      ]);
      expect(fake.calls.slice(1)).toEqual([["twins"]]);
      // A cached text is not re-embedded for a search either.
      const hits = await kb.search(SAME, 2, null);
      expect(hits.map((hit) => hit.id).sort()).toEqual(["a1", "a2"]);
      expect(fake.calls.length).toBe(2);
      expect(cacheRows(state)).toEqual(
        [
          { tenant: tenantA, model: embedder.model, content_hash: contentHash(SAME) },
          { tenant: tenantA, model: embedder.model, content_hash: contentHash("twins") },
        ].sort((x, y) => (x.content_hash < y.content_hash ? -1 : 1)),
      );
    });
  });

  it("the cache survives eviction of A's object", async () => {
    await evictDurableObject(stubFor(tenantA));
    await runInDurableObject(stubFor(tenantA), async (_instance, state) => {
      const kb = buildKb(state, tenantA, new WorkersAiEmbedder(fake.binding));
      const calls = fake.calls.length;
      await kb.add([{ id: "a5", text: SAME }]);
      expect(fake.calls.length).toBe(calls);
    });
  });

  it("B adding the same text calls the model again: no cache is shared across tenants", async () => {
    const calls = fake.calls.length;
    await runInDurableObject(stubFor(tenantB), async (_instance, state) => {
      expect(cacheRows(state)).toEqual([]);
      const kb = buildKb(state, tenantB, embedder);
      await kb.add([{ id: "a1", text: SAME }]);
      expect(fake.calls.length).toBe(calls + 1);
      expect(fake.calls.at(-1)).toEqual([SAME]);
      await kb.add([{ id: "b2", text: SAME }]);
      expect(fake.calls.length).toBe(calls + 1);
      expect(cacheRows(state)).toEqual([{ tenant: tenantB, model: embedder.model, content_hash: contentHash(SAME) }]);
    });
  });

  it("cache rows carry tenant A only, and only in A's object", async () => {
    await runInDurableObject(stubFor(tenantA), (_instance, state) => {
      const tenants = state.storage.sql
        .exec<{ tenant: string }>(`SELECT DISTINCT tenant FROM embedding_cache`)
        .toArray()
        .map((row) => row.tenant);
      expect(tenants).toEqual([tenantA]);
      // A cache keyed for B over A's database sees nothing of A's.
      expect(cacheOf(state, tenantB).count()).toBe(0);
      expect(cacheOf(state, tenantA).count()).toBe(2);
    });
    await runInDurableObject(stubFor(tenantB), (_instance, state) => {
      const tenants = state.storage.sql
        .exec<{ tenant: string }>(`SELECT DISTINCT tenant FROM embedding_cache`)
        .toArray()
        .map((row) => row.tenant);
      expect(tenants).toEqual([tenantB]);
      expect(cacheOf(state, tenantA).count()).toBe(0);
    });
  });

  it("another model is another cache key", async () => {
    const other = fakeAi();
    await runInDurableObject(stubFor(tenantA), async (_instance, state) => {
      const kb = buildKb(state, tenantA, new WorkersAiEmbedder(other.binding, "@cf/test/other-model"));
      await kb.add([{ id: "m1", text: SAME }]);
      expect(other.calls).toEqual([[SAME]]);
      const models = cacheRows(state)
        .filter((row) => row.content_hash === contentHash(SAME))
        .map((row) => row.model);
      expect(models.sort()).toEqual([embedder.model, "@cf/test/other-model"].sort());
    });
  });

  describe("a refused batch writes no cache rows", () => {
    const snapshot = (state: DurableObjectState) => {
      const out: Record<string, number> = {};
      for (const table of TABLES) {
        out[table] = state.storage.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table}`).one().n;
      }
      return out;
    };

    it("refused by validation: the model is not called", async () => {
      await runInDurableObject(stubFor(tenantA), async (_instance, state) => {
        const kb = buildKb(state, tenantA, embedder);
        const before = snapshot(state);
        const calls = fake.calls.length;
        await expect(
          kb.add([
            { id: "v1", text: "fresh text never embedded" },
            { id: "v2", text: "   " },
          ]),
        ).rejects.toMatchObject({ code: "ERR_INVALID_PARAMS" });
        expect(fake.calls.length).toBe(calls);
        expect(snapshot(state)).toEqual(before);
      });
    });

    it("refused by the atom limit: the model is not called", async () => {
      await runInDurableObject(stubFor(tenantA), async (_instance, state) => {
        const kb = buildKb(state, tenantA, embedder, { maxAtoms: kbCount(state, tenantA) });
        const before = snapshot(state);
        const calls = fake.calls.length;
        await expect(kb.add([{ id: "over", text: "one too many" }])).rejects.toMatchObject({ code: "ERR_LIMIT" });
        expect(fake.calls.length).toBe(calls);
        expect(snapshot(state)).toEqual(before);
      });
    });

    it("refused after embedding (the vectors do not fit the index): embedded, but nothing is cached", async () => {
      const narrow = fakeAi(16);
      await runInDurableObject(stubFor(tenantA), async (_instance, state) => {
        const kb = buildKb(state, tenantA, new WorkersAiEmbedder(narrow.binding, "@cf/test/narrow", 16));
        const before = snapshot(state);
        await expect(kb.add([{ id: "n1", text: "sixteen dimensions only" }])).rejects.toThrow(RangeError);
        expect(narrow.calls.length).toBe(1);
        expect(snapshot(state)).toEqual(before);
      });
    });

    it("refused at commit: the whole transaction rolls back, cache rows included", async () => {
      await runInDurableObject(stubFor(tenantA), async (_instance, state) => {
        const kb = buildKb(state, tenantA, embedder, { failCommit: true });
        const before = snapshot(state);
        const calls = fake.calls.length;
        await expect(
          kb.add([
            { id: "r1", text: "rolled back text one", tags: ["rb"] },
            { id: "a1", text: "rolled back replacement of a1", tags: ["rb"] },
          ]),
        ).rejects.toThrow("injected failure at commit");
        expect(fake.calls.length).toBe(calls + 1);
        expect(snapshot(state)).toEqual(before);
        const hashes = cacheRows(state).map((row) => row.content_hash);
        expect(hashes).not.toContain(contentHash("rolled back text one"));
        // a1 keeps its text, and a fresh knowledge base (as after eviction) sees the committed state only.
        const fresh = buildKb(state, tenantA, embedder);
        expect((await fresh.get(["a1"]))[0]?.text).toBe(SAME);
        expect(await fresh.get(["r1"])).toEqual([]);
      });
    });
  });
});

function kbCount(state: DurableObjectState, tenant: string): number {
  return state.storage.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM atoms WHERE tenant = ?`, tenant).one().n;
}

/** The scopes a step-up challenge names (it lists the token's own scopes plus the missing ones). */
function challengeScopes(challenge: string): string[] {
  return (/scope="([^"]*)"/.exec(challenge)?.[1] ?? "").split(" ").filter(Boolean);
}
