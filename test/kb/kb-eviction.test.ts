import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { type KbCaller, kbCaller, refusal, type SearchHitOut, type StatsOut, uniqueTenant } from "../helpers/kb-client";

/**
 * The knowledge base survives eviction of its tenant object: the in-memory vector index is rebuilt from SQLite, and
 * the same searches return the same ids, in the same order, with the same scores. Deletions stay deleted.
 */

const TENANT = uniqueTenant("evict");
const ATOMS = 300;
const BATCH = 100;

const WORDS = (
  "river lake ocean mountain valley desert forest glacier volcano island canyon meadow prairie tundra swamp " +
  "granite basalt quartz marble limestone copper iron silver gold cobalt lithium nickel zinc tin lead " +
  "engine turbine piston gearbox bearing valve pump boiler furnace kiln lathe drill press anvil forge " +
  "falcon heron otter badger lynx wolf bison moose salmon trout beetle moth sparrow raven owl"
).split(" ");

/** Deterministic pseudo-random words (a small LCG), so every run builds the same corpus. */
function corpus(): { id: string; text: string; tags: string[]; source: string; title?: string }[] {
  let state = 12345;
  const next = () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state;
  };
  return Array.from({ length: ATOMS }, (_, i) => {
    const words = Array.from({ length: 10 + (next() % 8) }, () => WORDS[next() % WORDS.length] as string);
    return {
      id: `atom-${String(i).padStart(3, "0")}`,
      text: `${words.join(" ")}.`,
      tags: [`group-${i % 7}`, ...(i % 3 === 0 ? ["third"] : [])],
      source: `book-${i % 5}`,
      ...(i % 4 === 0 ? { title: `${words[0]} ${words[1]} notes` } : {}),
    };
  });
}

const SEARCHES: Record<string, unknown>[] = [
  { query: "river lake ocean", top_k: 10 },
  { query: "granite basalt marble", top_k: 10 },
  { query: "engine turbine piston gearbox", top_k: 10 },
  { query: "falcon heron otter", top_k: 10 },
  { query: "copper iron silver gold", top_k: 10 },
  { query: "volcano", top_k: 1 },
  { query: "forest wolf moose salmon", top_k: 24 },
  { query: "lathe drill press", top_k: 10, filter: { tags: { any: ["group-3", "group-4"] } } },
  { query: "mountain valley", top_k: 10, filter: { source: { in: ["book-2"] }, tags: ["third"] } },
  { query: "tundra glacier swamp", top_k: 15, filter: { tags: { all: ["group-1", "third"] } } },
];

let caller: KbCaller;
const stub = () => env.TENANT_SERVER.get(env.TENANT_SERVER.idFromName(TENANT));

async function runSearches(): Promise<SearchHitOut[][]> {
  const out: SearchHitOut[][] = [];
  for (const args of SEARCHES) out.push((await caller.ok<{ results: SearchHitOut[] }>("search", args)).results);
  return out;
}

/** Evicts the tenant object and proves it: the next call runs on a fresh instance. */
async function evict(): Promise<void> {
  let before: unknown;
  await runInDurableObject(stub(), (instance) => {
    before = instance;
  });
  await evictDurableObject(stub());
  await runInDurableObject(stub(), (instance) => {
    expect(instance).not.toBe(before);
  });
}

describe("eviction of the tenant object", () => {
  let baseline: SearchHitOut[][] = [];

  beforeAll(async () => {
    caller = await kbCaller(TENANT);
    const atoms = corpus();
    for (let i = 0; i < atoms.length; i += BATCH) {
      await caller.ok("add_atoms", { atoms: atoms.slice(i, i + BATCH) });
    }
  });

  it("stores 300 atoms and answers 10 searches", async () => {
    const stats = await caller.ok<StatsOut>("kb_stats", {});
    expect(stats).toMatchObject({ atoms: ATOMS, index: { vectors: ATOMS } });
    baseline = await runSearches();
    for (const [i, results] of baseline.entries()) {
      expect(results.length, JSON.stringify(SEARCHES[i])).toBeGreaterThan(0);
      const scores = results.map((hit) => hit.score);
      expect(scores).toEqual([...scores].sort((a, b) => b - a));
    }
    expect(baseline[0]?.length).toBe(10);
    expect(baseline[5]?.length).toBe(1);
    expect(baseline[6]?.length).toBe(24);
  });

  it("returns identical ids, order and scores after eviction", async () => {
    await evict();
    const after = await runSearches();
    expect(after).toEqual(baseline);
  });

  it("get_atom and kb_stats still work after eviction", async () => {
    await evict();
    const atoms = corpus();
    for (const index of [0, 1, 137, 299]) {
      const atom = atoms[index];
      const got = await caller.ok<{ atom: { id: string; text: string; tags: string[]; title: string | null } }>(
        "get_atom",
        { id: atom?.id },
      );
      expect(got.atom).toMatchObject({ id: atom?.id, text: atom?.text, tags: atom?.tags, title: atom?.title ?? null });
    }
    expect(await caller.ok<StatsOut>("kb_stats", {})).toMatchObject({ atoms: ATOMS, index: { vectors: ATOMS } });
  });

  it("deleted atoms stay gone from search after eviction", async () => {
    const doomed = [...new Set(baseline.flatMap((results) => results.slice(0, 3).map((hit) => hit.id)))];
    doomed.push("atom-000", "atom-150", "atom-299");
    const unique = [...new Set(doomed)];
    expect(unique.length).toBeGreaterThan(10);
    const deleted = await caller.ok<{ deleted: string[]; notFound: string[] }>("delete_atoms", { ids: unique });
    expect(deleted.deleted.sort()).toEqual([...unique].sort());

    const gone = new Set(unique);
    const beforeEviction = await runSearches();
    for (const results of beforeEviction) for (const hit of results) expect(gone.has(hit.id), hit.id).toBe(false);
    // Survivors keep their scores: each result list is the old one minus the deleted ids, refilled from below.
    for (const [i, results] of beforeEviction.entries()) {
      const kept = (baseline[i] ?? []).filter((hit) => !gone.has(hit.id));
      expect(results.slice(0, kept.length)).toEqual(kept);
    }

    await evict();
    const afterEviction = await runSearches();
    expect(afterEviction).toEqual(beforeEviction);
    for (const id of unique.slice(0, 5)) {
      expect(refusal(await caller.call("get_atom", { id })).code).toBe("ERR_ATOM_NOT_FOUND");
    }
    const remaining = ATOMS - unique.length;
    expect(await caller.ok<StatsOut>("kb_stats", {})).toMatchObject({
      atoms: remaining,
      index: { vectors: remaining },
    });
    // The deleted atoms' exact texts find other atoms, never themselves.
    const atoms = corpus();
    for (const id of unique.slice(0, 5)) {
      const text = atoms.find((atom) => atom.id === id)?.text ?? "";
      const results = (await caller.ok<{ results: SearchHitOut[] }>("search", { query: text, top_k: 5 })).results;
      expect(results.map((hit) => hit.id)).not.toContain(id);
    }
  });

  it("replaced and re-added atoms are searchable after eviction", async () => {
    await caller.ok("add_atoms", {
      atoms: [
        { id: "atom-001", text: "zeppelin hovercraft airship blimp" },
        { id: "atom-000", text: "submarine bathyscaphe sonar" },
      ],
    });
    await evict();
    const airship = await caller.ok<{ results: SearchHitOut[] }>("search", { query: "zeppelin airship", top_k: 3 });
    expect(airship.results[0]?.id).toBe("atom-001");
    const sonar = await caller.ok<{ results: SearchHitOut[] }>("search", { query: "submarine sonar", top_k: 3 });
    expect(sonar.results[0]?.id).toBe("atom-000");
    const old = corpus()[1]?.text ?? "";
    const oldHits = await caller.ok<{ results: SearchHitOut[] }>("search", { query: old, top_k: 5 });
    expect(oldHits.results.map((hit) => hit.id)).not.toContain("atom-001");
  });

  // Regression: Durable Object SQLite binds at most 100 variables per statement (tenant + 99 ids per chunk).
  it("search with top_k 25..50 over 300 atoms", async () => {
    const results = (await caller.ok<{ results: SearchHitOut[] }>("search", { query: "river lake", top_k: 50 }))
      .results;
    expect(results.length).toBe(50);
  });
});
