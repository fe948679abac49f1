import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { LIMITS } from "../../src/kb/limits";
import { type KbCaller, kbCaller, refusal, type SearchHitOut, type StatsOut, uniqueTenant } from "../helpers/kb-client";

/**
 * Bad input is refused with a clear error (isError, a stable code, a message naming the field) and nothing is
 * written: not the atoms, not their tags, not their vectors, not their cached embeddings; a batch with one bad
 * atom is refused whole.
 *
 * Codes: ERR_INVALID_PARAMS / ERR_LIMIT come from the knowledge base; "SCHEMA" marks a refusal by the SDK's
 * input-schema validation (the tool's zod schema), which answers isError with the text
 * "Input validation error: ... <path>: ..." and no structured code (see the report).
 */

const TENANT = uniqueTenant("bad-input");
const TABLES = ["atoms", "atom_tags", "vector_rows", "embedding_cache"] as const;
const BASELINE = [
  { id: "base-1", text: "Baseline atom one about rivers and lakes", tags: ["base", "water"] },
  { id: "base-2", text: "Baseline atom two about mountains", tags: ["base"], title: "Mountains" },
  { id: "base-3", text: "Baseline atom three about deserts", source: "atlas" },
];

let caller: KbCaller;

beforeAll(async () => {
  caller = await kbCaller(TENANT);
  await caller.ok("add_atoms", { atoms: BASELINE });
});

type Counts = Record<(typeof TABLES)[number], number> & { statsAtoms: number; statsCached: number };

/** Row counts of every knowledge-base table in the tenant's object, read directly, plus what kb_stats says. */
async function snapshot(tenant = TENANT, who = caller): Promise<Counts> {
  const stub = env.TENANT_SERVER.get(env.TENANT_SERVER.idFromName(tenant));
  const rows = await runInDurableObject(stub, (_instance, state) => {
    const out: Record<string, number> = {};
    for (const table of TABLES) {
      out[table] = state.storage.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table}`).one().n;
    }
    return out;
  });
  const stats = await who.ok<StatsOut>("kb_stats", {});
  return {
    ...(rows as Record<(typeof TABLES)[number], number>),
    statsAtoms: stats.atoms,
    statsCached: stats.cachedEmbeddings,
  };
}

let batchNo = 0;

/** `n` good atoms with fresh ids, a per-batch tag and unique searchable text. */
function goodAtoms(n: number): { id: string; text: string; tags: string[] }[] {
  const batch = `b${++batchNo}`;
  return Array.from({ length: n }, (_, i) => ({
    id: `good-${batch}-${i}`,
    text: `Good atom ${i} of batch ${batch} zebra${batch} giraffe${i}`,
    tags: [`tag-${batch}`],
  }));
}

/** None of these ids can be read, listed or found; the batch tag matches nothing. */
async function expectAbsent(ids: readonly string[]): Promise<void> {
  if (!ids.length) return;
  const wanted = new Set(ids);
  const listed: string[] = [];
  let cursor: string | null = null;
  do {
    const args: Record<string, unknown> = cursor === null ? { limit: 100 } : { limit: 100, cursor };
    const page: { atoms: { id: string }[]; next_cursor: string | null } = await caller.ok("list_atoms", args);
    listed.push(...page.atoms.map((atom) => atom.id));
    cursor = page.next_cursor;
  } while (cursor !== null);
  expect(listed.filter((id) => wanted.has(id))).toEqual([]);
  for (const id of [ids[0], ids.at(-1)]) {
    expect(refusal(await caller.call("get_atom", { id })).code).toBe("ERR_ATOM_NOT_FOUND");
  }
  const batch = ids[0]?.split("-")[1];
  const found = await caller.ok<{ results: SearchHitOut[] }>("search", { query: `zebra${batch}`, top_k: 50 });
  expect(found.results.filter((hit) => wanted.has(hit.id))).toEqual([]);
  const tagged = await caller.ok<{ results: SearchHitOut[] }>("search", {
    query: `zebra${batch}`,
    filter: { tags: [`tag-${batch}`] },
  });
  expect(tagged.results).toEqual([]);
}

async function expectBaselineIntact(): Promise<void> {
  for (const atom of BASELINE) {
    const got = await caller.ok<{ atom: { text: string; tags: string[] } }>("get_atom", { id: atom.id });
    expect(got.atom.text).toBe(atom.text);
  }
}

/** Runs a call that must be refused with `code` and a message matching `field`; nothing may change. */
async function expectRefusedUnchanged(
  tool: string,
  args: Record<string, unknown>,
  code: string,
  field: RegExp,
): Promise<void> {
  const before = await snapshot();
  const result = await caller.call(tool, args);
  const refused = refusal(result);
  expect(refused.code, result.raw.slice(0, 500)).toBe(code);
  expect(refused.message).toMatch(field);
  expect(await snapshot()).toEqual(before);
}

const euro = "\u20ac"; // 3 UTF-8 bytes, 1 UTF-16 unit
const emoji = "\u{1f600}"; // 4 UTF-8 bytes, 2 UTF-16 units

interface AddCase {
  readonly label: string;
  readonly atoms: () => Record<string, unknown>[];
  readonly code: "ERR_INVALID_PARAMS" | "ERR_LIMIT" | "SCHEMA";
  readonly field: RegExp;
}

function withBad(n: number, at: number, bad: Record<string, unknown>): () => Record<string, unknown>[] {
  return () => {
    const atoms: Record<string, unknown>[] = goodAtoms(n);
    atoms.splice(at, 0, bad);
    return atoms;
  };
}

const ADD_CASES: AddCase[] = [
  {
    label: "text over 16384 bytes (ASCII)",
    atoms: () => [{ text: "a".repeat(LIMITS.atomTextBytes + 1) }],
    code: "ERR_LIMIT",
    field: /atoms\[0\]\.text is longer than 16384 bytes/,
  },
  {
    label: "text under 16384 chars but over 16384 bytes (3-byte chars)",
    atoms: () => [{ text: euro.repeat(5462) }],
    code: "ERR_LIMIT",
    field: /atoms\[0\]\.text is longer than 16384 bytes/,
  },
  {
    label: "text under 16384 UTF-16 units but over 16384 bytes (4-byte chars)",
    atoms: () => [{ text: emoji.repeat(4097) }],
    code: "ERR_LIMIT",
    field: /atoms\[0\]\.text/,
  },
  {
    label: "text of 8193 two-byte chars",
    atoms: () => [{ text: "\u00e9".repeat(8193) }],
    code: "ERR_LIMIT",
    field: /atoms\[0\]\.text/,
  },
  { label: "101 atoms", atoms: () => goodAtoms(101), code: "SCHEMA", field: /atoms: Too big.*100/ },
  { label: "no atoms", atoms: () => [], code: "SCHEMA", field: /atoms: Too small/ },
  {
    label: "a tag that is a number",
    atoms: () => [{ text: "tags not strings", tags: [1] }],
    code: "SCHEMA",
    field: /atoms\.0\.tags\.0/,
  },
  {
    label: "a tag that is null",
    atoms: () => [{ text: "tags not strings", tags: ["ok", null] }],
    code: "SCHEMA",
    field: /atoms\.0\.tags\.1/,
  },
  {
    label: "a tag that is an object",
    atoms: () => [{ text: "tags not strings", tags: [{ $ne: "x" }] }],
    code: "SCHEMA",
    field: /atoms\.0\.tags\.0/,
  },
  {
    label: "tags as a string",
    atoms: () => [{ text: "tags not a list", tags: "a,b" }],
    code: "SCHEMA",
    field: /atoms\.0\.tags/,
  },
  {
    label: "17 tags",
    atoms: () => [{ text: "too many tags", tags: Array.from({ length: 17 }, (_, i) => `t${i}`) }],
    code: "SCHEMA",
    field: /atoms\.0\.tags/,
  },
  {
    label: "a tag with a newline",
    atoms: () => [{ text: "tag with newline", tags: ["ok", "bad\ntag"] }],
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[0\]\.tags/,
  },
  {
    label: "a tag starting with a newline",
    atoms: () => [{ text: "tag with newline", tags: ["\nbad"] }],
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[0\]\.tags/,
  },
  {
    label: "a tag with a tab",
    atoms: () => [{ text: "tag with tab", tags: ["bad\ttag"] }],
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[0\]\.tags/,
  },
  {
    label: "a tag with markup",
    atoms: () => [{ text: "tag with markup", tags: ["<script>"] }],
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[0\]\.tags/,
  },
  {
    label: "an empty tag",
    atoms: () => [{ text: "empty tag", tags: [""] }],
    code: "SCHEMA",
    field: /atoms\.0\.tags\.0/,
  },
  {
    label: "a 65-character tag",
    atoms: () => [{ text: "long tag", tags: ["t".repeat(65)] }],
    code: "SCHEMA",
    field: /atoms\.0\.tags\.0/,
  },
  {
    label: "a 257-character title",
    atoms: () => [{ text: "long title", title: "T".repeat(LIMITS.titleChars + 1) }],
    code: "SCHEMA",
    field: /atoms\.0\.title/,
  },
  {
    label: "an empty title",
    atoms: () => [{ text: "empty title", title: "" }],
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[0\]\.title/,
  },
  {
    label: "a 513-character source",
    atoms: () => [{ text: "long source", source: "s".repeat(LIMITS.sourceChars + 1) }],
    code: "SCHEMA",
    field: /atoms\.0\.source/,
  },
  { label: "empty text", atoms: () => [{ text: "" }], code: "ERR_INVALID_PARAMS", field: /atoms\[0\]\.text/ },
  {
    label: "whitespace text",
    atoms: () => [{ text: " \n\t\u00a0\u2003 " }],
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[0\]\.text must not be empty/,
  },
  { label: "no text", atoms: () => [{ id: "no-text" }], code: "SCHEMA", field: /atoms\.0\.text/ },
  { label: "text not a string", atoms: () => [{ text: 42 }], code: "SCHEMA", field: /atoms\.0\.text/ },
  {
    label: "id with '/'",
    atoms: () => [{ id: "a/b", text: "x" }],
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[0\]\.id/,
  },
  { label: "id '../x'", atoms: () => [{ id: "../x", text: "x" }], code: "ERR_INVALID_PARAMS", field: /atoms\[0\]\.id/ },
  { label: "id '..'", atoms: () => [{ id: "..", text: "x" }], code: "ERR_INVALID_PARAMS", field: /atoms\[0\]\.id/ },
  { label: "empty id", atoms: () => [{ id: "", text: "x" }], code: "ERR_INVALID_PARAMS", field: /atoms\[0\]\.id/ },
  {
    label: "id with a space",
    atoms: () => [{ id: "a b", text: "x" }],
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[0\]\.id/,
  },
  {
    label: "id with a non-ASCII letter",
    atoms: () => [{ id: "caf\u00e9", text: "x" }],
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[0\]\.id/,
  },
  { label: "65-character id", atoms: () => [{ id: "i".repeat(65), text: "x" }], code: "SCHEMA", field: /atoms\.0\.id/ },
  { label: "id that is a number", atoms: () => [{ id: 7, text: "x" }], code: "SCHEMA", field: /atoms\.0\.id/ },
  {
    label: "an unknown atom field",
    atoms: () => [{ text: "x", embedding: [0.1, 0.2] }],
    code: "SCHEMA",
    field: /Unrecognized key: "embedding"/,
  },
  {
    label: "duplicate ids in a batch",
    atoms: () => [
      { id: "dup", text: "first copy" },
      { id: "dup", text: "second copy" },
    ],
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[1\]\.id "dup" appears more than once/,
  },
  {
    label: "99 good atoms and one empty text at index 57",
    atoms: withBad(99, 57, { id: "bad-57", text: "" }),
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[57\]\.text/,
  },
  {
    label: "99 good atoms and one bad id last",
    atoms: withBad(99, 99, { id: "../x", text: "last one is bad" }),
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[99\]\.id/,
  },
  {
    label: "99 good atoms and one oversized text first",
    atoms: withBad(99, 0, { text: `${euro.repeat(5000)}${"a".repeat(2000)}` }),
    code: "ERR_LIMIT",
    field: /atoms\[0\]\.text/,
  },
  {
    label: "99 good atoms and one bad tag in the middle",
    atoms: withBad(99, 50, { text: "bad tag", tags: ["line\nbreak"] }),
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[50\]\.tags/,
  },
  {
    label: "99 good atoms and one title too long",
    atoms: withBad(99, 42, { text: "long title", title: "T".repeat(300) }),
    code: "SCHEMA",
    field: /atoms\.42\.title/,
  },
  {
    label: "99 good atoms and a duplicate of the first at the end",
    atoms: () => {
      const atoms = goodAtoms(99);
      return [...atoms, { ...atoms[0], text: "duplicate" }];
    },
    code: "ERR_INVALID_PARAMS",
    field: /atoms\[99\]\.id .* more than once/,
  },
];

describe("add_atoms refuses bad input and writes nothing", () => {
  it("the tenant starts with the baseline", async () => {
    const counts = await snapshot();
    expect(counts).toMatchObject({ atoms: 3, atom_tags: 3, vector_rows: 3, embedding_cache: 0, statsAtoms: 3 });
  });

  for (const testCase of ADD_CASES) {
    it(`refuses ${testCase.label}`, async () => {
      const atoms = testCase.atoms();
      await expectRefusedUnchanged("add_atoms", { atoms }, testCase.code, testCase.field);
      const ids = atoms.map((atom) => atom.id).filter((id): id is string => typeof id === "string" && id.length > 0);
      await expectAbsent(ids.filter((id) => id.startsWith("good-")));
      for (const id of ids.filter((id) => /^[a-z0-9-]{1,64}$/.test(id) && !id.startsWith("good-"))) {
        expect(refusal(await caller.call("get_atom", { id })).code).toBe("ERR_ATOM_NOT_FOUND");
      }
    });
  }

  it("a refused batch does not replace an existing atom", async () => {
    await expectRefusedUnchanged(
      "add_atoms",
      {
        atoms: [
          { id: "base-1", text: "replacement text", tags: ["replaced"] },
          { id: "base-2", text: "   " },
        ],
      },
      "ERR_INVALID_PARAMS",
      /atoms\[1\]\.text/,
    );
    await expectBaselineIntact();
    const tagged = await caller.ok<{ results: SearchHitOut[] }>("search", {
      query: "replacement text",
      filter: { tags: ["replaced"] },
    });
    expect(tagged.results).toEqual([]);
    const water = await caller.ok<{ results: SearchHitOut[] }>("search", {
      query: "rivers",
      filter: { tags: ["water"] },
    });
    expect(water.results.map((hit) => hit.id)).toEqual(["base-1"]);
  });

  it("the baseline is intact after all refusals", async () => {
    await expectBaselineIntact();
    expect(await snapshot()).toMatchObject({ atoms: 3, atom_tags: 3, vector_rows: 3, embedding_cache: 0 });
  });
});

describe("search refuses bad queries and bad top_k", () => {
  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    ["an empty query", { query: "" }, "ERR_INVALID_PARAMS", /query must not be empty/],
    ["a whitespace query", { query: " \n\t\u3000 " }, "ERR_INVALID_PARAMS", /query must not be empty/],
    ["a query of 2049 bytes", { query: "q".repeat(2049) }, "ERR_INVALID_PARAMS", /query is longer than 2048 bytes/],
    [
      "a query of 683 chars but 2049 bytes",
      { query: euro.repeat(683) },
      "ERR_INVALID_PARAMS",
      /query is longer than 2048 bytes/,
    ],
    ["a query with no words", { query: "!!! ??? ..." }, "ERR_INVALID_PARAMS", /query has no searchable words/],
    ["no query", {}, "SCHEMA", /query/],
    ["a query that is not a string", { query: ["rivers"] }, "SCHEMA", /query/],
    ["top_k 0", { query: "rivers", top_k: 0 }, "SCHEMA", /top_k: Too small: expected number to be >=1/],
    ["top_k 51", { query: "rivers", top_k: 51 }, "SCHEMA", /top_k: Too big: expected number to be <=50/],
    ["top_k -1", { query: "rivers", top_k: -1 }, "SCHEMA", /top_k: Too small/],
    ["top_k 1e9", { query: "rivers", top_k: 1e9 }, "SCHEMA", /top_k: Too big/],
    ["top_k 2.5", { query: "rivers", top_k: 2.5 }, "SCHEMA", /top_k: .*int/],
    ["top_k as a string", { query: "rivers", top_k: "5" }, "SCHEMA", /top_k/],
    ["top_k null", { query: "rivers", top_k: null }, "SCHEMA", /top_k/],
  ];
  for (const [label, args, code, field] of cases) {
    it(`refuses ${label}`, async () => {
      await expectRefusedUnchanged("search", args, code, field);
    });
  }

  it("accepts the boundaries: a 2048-byte query, top_k 1 and 50", async () => {
    const query = `rivers ${euro.repeat(680)}`; // 7 + 2040 = 2047 bytes
    expect(new TextEncoder().encode(`${query}q`).length).toBe(2048);
    expect((await caller.ok<{ results: unknown[] }>("search", { query: `${query}q`, top_k: 1 })).results.length).toBe(
      1,
    );
    expect((await caller.ok<{ results: unknown[] }>("search", { query: "rivers", top_k: 50 })).results.length).toBe(3);
  });
});

describe("other tools refuse bad ids and limits", () => {
  const cases: [string, string, Record<string, unknown>, string, RegExp][] = [
    ["get_atom", "id '../x'", { id: "../x" }, "ERR_INVALID_PARAMS", /invalid atom id/],
    ["get_atom", "a 65-character id", { id: "i".repeat(65) }, "SCHEMA", /id/],
    ["delete_atoms", "no ids", { ids: [] }, "SCHEMA", /ids/],
    ["delete_atoms", "101 ids", { ids: Array.from({ length: 101 }, (_, i) => `x${i}`) }, "SCHEMA", /ids/],
    [
      "delete_atoms",
      "an existing id with '../x'",
      { ids: ["base-1", "../x"] },
      "ERR_INVALID_PARAMS",
      /invalid atom id/,
    ],
    ["delete_atoms", "an existing id with 'a/b'", { ids: ["base-2", "a/b"] }, "ERR_INVALID_PARAMS", /invalid atom id/],
    ["list_atoms", "limit 0", { limit: 0 }, "SCHEMA", /limit/],
    ["list_atoms", "limit 101", { limit: 101 }, "SCHEMA", /limit/],
    ["list_atoms", "limit 2.5", { limit: 2.5 }, "SCHEMA", /limit/],
    ["list_atoms", "a garbage cursor", { cursor: "nope" }, "ERR_INVALID_PARAMS", /invalid or expired cursor/],
  ];
  for (const [tool, label, args, code, field] of cases) {
    it(`${tool} refuses ${label}`, async () => {
      await expectRefusedUnchanged(tool, args, code, field);
      await expectBaselineIntact();
    });
  }
});

describe("the limits themselves are accepted", () => {
  it("stores atoms exactly at every per-atom limit (in a batch of 99)", async () => {
    const tenant = uniqueTenant("bad-input-edge");
    const edge = await kbCaller(tenant);
    const text = `${euro.repeat(5461)}a`; // 16383 + 1 = 16384 bytes
    expect(new TextEncoder().encode(text).length).toBe(LIMITS.atomTextBytes);
    const atoms = [
      { id: "i".repeat(64), text, title: "T".repeat(256), source: "s".repeat(512) },
      { id: "tags-16", text: "sixteen tags", tags: Array.from({ length: 16 }, (_, i) => `tag ${i}: ok/x.y-z`) },
      ...Array.from({ length: 97 }, (_, i) => ({ id: `n-${i}`, text: `filler atom ${i}` })),
    ];
    expect(await edge.ok("add_atoms", { atoms })).toMatchObject({ replaced: [] });
    const counts = await snapshot(tenant, edge);
    expect(counts).toMatchObject({ atoms: 99, atom_tags: 16, vector_rows: 99, statsAtoms: 99 });
    const got = await edge.ok<{ atom: { text: string } }>("get_atom", { id: "i".repeat(64) });
    expect(got.atom.text).toBe(text);
  });

  // Regression: Durable Object SQLite binds at most 100 variables per statement (tenant + 99 ids per chunk).
  it("accepts a batch of exactly 100 atoms", async () => {
    const tenant = uniqueTenant("bad-input-100");
    const edge = await kbCaller(tenant);
    const atoms = Array.from({ length: LIMITS.batchSize }, (_, i) => ({ id: `h-${i}`, text: `hundred atom ${i}` }));
    const added = await edge.ok<{ added: string[] }>("add_atoms", { atoms });
    expect(added.added.length).toBe(100);
  });

  it("deletes exactly 100 ids in one call", async () => {
    const tenant = uniqueTenant("bad-input-del100");
    const edge = await kbCaller(tenant);
    await edge.ok("add_atoms", { atoms: [{ id: "only", text: "the only atom" }] });
    const ids = ["only", ...Array.from({ length: LIMITS.idsPerCall - 1 }, (_, i) => `missing-${i}`)];
    const deleted = await edge.ok<{ deleted: string[] }>("delete_atoms", { ids });
    expect(deleted.deleted).toEqual(["only"]);
  });

  it("today a 100-atom batch fails closed: nothing is written", async () => {
    const tenant = uniqueTenant("bad-input-100b");
    const edge = await kbCaller(tenant);
    const atoms = Array.from({ length: LIMITS.batchSize }, (_, i) => ({ id: `h-${i}`, text: `hundred atom ${i}` }));
    const result = await edge.call("add_atoms", { atoms });
    if (result.isError) {
      expect(await snapshot(tenant, edge)).toMatchObject({ atoms: 0, atom_tags: 0, vector_rows: 0, statsAtoms: 0 });
    } else {
      expect(await snapshot(tenant, edge)).toMatchObject({ atoms: 100, vector_rows: 100, statsAtoms: 100 });
    }
  });
});
