import { describe, expect, it } from "vitest";
import { initializeBody, mcpFetch, rpcResult } from "./helpers/mcp-http";
import { mintToken } from "./helpers/tokens";

async function session(tenant: string) {
  const token = await mintToken({ tenant });
  const init = await mcpFetch({ method: "POST", token, body: initializeBody() });
  const sid = init.headers.get("mcp-session-id") ?? "";
  let id = 10;
  return async (name: string, args: Record<string, unknown>) => {
    const res = await mcpFetch({
      method: "POST",
      token,
      headers: { "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" },
      body: JSON.stringify({ jsonrpc: "2.0", id: id++, method: "tools/call", params: { name, arguments: args } }),
    });
    return (await rpcResult(res)) as { result?: { structuredContent?: Record<string, unknown>; isError?: boolean } };
  };
}

describe("kb smoke", () => {
  it("adds, searches, lists, deletes", async () => {
    const call = await session("kbsmoke-a");
    const add = await call("add_atoms", {
      atoms: [
        { id: "one", text: "The quick brown fox jumps over the lazy dog", tags: ["animals"], source: "s1" },
        { id: "two", text: "Durable Objects give each tenant its own SQLite database", tags: ["cloud"] },
      ],
    });
    expect(add.result?.structuredContent).toEqual({ added: ["one", "two"], replaced: [] });
    const search = await call("search", { query: "brown fox", top_k: 2 });
    const results = (search.result?.structuredContent?.results ?? []) as { id: string; score: number }[];
    expect(results[0]?.id).toBe("one");
    const filtered = await call("search", { query: "brown fox", filter: { tags: ["cloud"] } });
    expect(((filtered.result?.structuredContent?.results ?? []) as { id: string }[]).map((r) => r.id)).toEqual(["two"]);
    const bad = await call("search", { query: "fox", filter: { tenant: "other" } });
    expect(bad.result?.isError).toBe(true);
    const list = await call("list_atoms", { limit: 1 });
    expect(list.result?.structuredContent?.next_cursor).toMatch(/^h2\./);
    const del = await call("delete_atoms", { ids: ["one", "nope"] });
    expect(del.result?.structuredContent).toEqual({ deleted: ["one"], notFound: ["nope"] });
    const stats = await call("kb_stats", {});
    expect(stats.result?.structuredContent?.atoms).toBe(1);
  });
});
