// Step 2: B searches for A's exact text, tags and sources, with every filter trick the server refuses; every
// answer is scanned for A's canaries, and A's data is checked after each family of attacks. Both eras.
import { ERAS, noteOf } from "../context.mjs";

const REFUSED = new Set(["ERR_INVALID_PARAMS", "SCHEMA"]);
const SCOPE_KEYS = ["tenant", "tenant_id", "Tenant", "TENANT_ID", "tenantId", "namespace", "index", "org", "account"];
const LOOK_ALIKES = [
  "t\u0435nant",
  "\uff54\uff45\uff4e\uff41\uff4e\uff54",
  "tenant\u200b",
  "tags ",
  "Tags",
  "t\u0430gs",
  "\uff54\uff41\uff47\uff53",
  "source ",
  "s\u043eurce",
];

export async function vectorIndex(ctx) {
  const { story, tenants } = ctx;
  const A = tenants.a;
  const secret = story.aAtoms[0];
  const channel = "vector index";
  const search = (args, expect) =>
    ERAS.map((era) => async () => {
      const answer = await ctx.b.call(era, "search", args);
      const ok = expect === "refused" ? answer.refused && REFUSED.has(answer.code) : !answer.refused && onlyB(answer);
      return { text: answer.text, ok, note: noteOf("B", era, `search ${JSON.stringify(args).slice(0, 120)}`, answer) };
    });
  const onlyB = (answer) =>
    (answer.result.structuredContent?.results ?? []).every(
      (hit) => !story.aAtoms.some((atom) => atom.id === hit.id && hit.text === atom.text),
    );

  await ctx.attacks(
    channel,
    "A's exact text, tags and source as queries",
    "answers with B's atoms only",
    [secret.text, story.aAtoms[1].text, secret.tags.join(" "), secret.source, story.canary].flatMap((query) =>
      search({ query, top_k: 50 }, "answered"),
    ),
  );
  await ctx.attacks(
    channel,
    "filters naming A's tags and source",
    "empty or B-only results",
    [
      { tags: ["secret"] },
      { tags: { any: ["secret", "finance"] } },
      { tags: { all: ["finance", "secret"] } },
      { source: "hr-vault" },
      { source: { in: ["hr-vault", "broadcast"] } },
    ].flatMap((filter) => search({ query: secret.text, top_k: 50, filter }, "answered")),
  );
  await ctx.attacks(
    channel,
    "tenant and namespace keys in the filter",
    "refused (ERR_INVALID_PARAMS or input validation)",
    SCOPE_KEYS.flatMap((key) =>
      [A, "*", { $ne: tenants.b }].flatMap((value) =>
        search({ query: story.canary, filter: { [key]: value } }, "refused"),
      ),
    ),
  );
  const operand = (op) =>
    op === "$or" || op === "$and" ? [{ tenant: A }, { tags: ["secret"] }] : op === "$ne" ? tenants.b : [A, "secret"];
  await ctx.attacks(
    channel,
    "filter operators",
    "refused (ERR_INVALID_PARAMS or input validation)",
    ["$ne", "$in", "$nin", "$or", "$and"].flatMap((op) => [
      ...search({ query: story.canary, filter: { [op]: operand(op) } }, "refused"),
      ...search({ query: story.canary, filter: { tags: { [op]: operand(op) } } }, "refused"),
      ...search({ query: story.canary, filter: { source: { [op]: operand(op) } } }, "refused"),
    ]),
  );
  await ctx.attacks(
    channel,
    "look-alike filter keys",
    "refused (ERR_INVALID_PARAMS or input validation)",
    LOOK_ALIKES.flatMap((key) =>
      search(
        { query: story.canary, filter: { [key]: key.includes("s") && !key.includes("t") ? "hr-vault" : ["secret"] } },
        "refused",
      ),
    ),
  );
  await ctx.attacks(
    channel,
    "extra scope arguments beside the query",
    "refused (input validation)",
    ["tenant", "tenant_id", "namespace", "index"].flatMap((key) =>
      search({ query: story.canary, [key]: A }, "refused"),
    ),
  );
  const many = (n, width = 8) => Array.from({ length: n }, (_, i) => `t${String(i).padStart(width, "0")}`);
  await ctx.attacks(
    channel,
    "oversized and deeply nested filters",
    "refused (ERR_INVALID_PARAMS or input validation)",
    [
      { tags: many(17) },
      { tags: many(1000) },
      { tags: { any: many(16, 150) } },
      { source: { in: many(17) } },
      { source: "s".repeat(3000) },
      Object.fromEntries(many(200).map((key) => [key, 1])),
      { tags: { any: JSON.parse(`${"[".repeat(1500)}${"]".repeat(1500)}`) } },
    ].flatMap((filter) => search({ query: story.canary, filter }, "refused")),
  );
  await ctx.attacks(channel, "__proto__ in the filter", "refused or empty", [
    ...ERAS.map((era) => async () => {
      const filter = JSON.parse(`{"__proto__": {"tenant": "${A}", "tags": ["secret"]}}`);
      const answer = await ctx.b.call(era, "search", { query: story.canary, filter });
      const ok = answer.refused
        ? REFUSED.has(answer.code)
        : (answer.result.structuredContent?.results ?? []).length === 0;
      return { text: answer.text, ok, note: noteOf("B", era, "search with __proto__ filter", answer) };
    }),
  ]);
  await ctx.attacks(channel, "A's atom ids through get, read, delete", "not found, as for an id that never existed", [
    ...ERAS.map((era) => async () => {
      const answer = await ctx.b.call(era, "get_atom", { id: secret.id });
      return {
        text: answer.text,
        ok: answer.refused && answer.code === "ERR_ATOM_NOT_FOUND",
        note: noteOf("B", era, "get_atom a-secret", answer),
      };
    }),
    ...ERAS.map((era) => async () => {
      const answer = await ctx.b.readResource(era, `atom://${secret.id}`);
      return {
        text: answer.text,
        ok: answer.refused,
        note: `B ${era} resources/read atom://a-secret: ${answer.refused ? `refused ${answer.code}` : "answered"}`,
      };
    }),
    ...ERAS.map((era) => async () => {
      const answer = await ctx.b.call(era, "delete_atoms", { ids: [secret.id, story.aAtoms[1].id] });
      const deleted = answer.result?.structuredContent?.deleted;
      const ok = !answer.refused && (deleted === 0 || (Array.isArray(deleted) && deleted.length === 0));
      return {
        text: answer.text,
        ok,
        note: `${noteOf("B", era, "delete_atoms [a-secret, a-poison]", answer)} ${answer.text.slice(0, 160)}`,
      };
    }),
  ]);
  await ctx.attacks(channel, "B's listing and counts", "B's atoms only, B's count", [
    ...ERAS.map((era) => async () => {
      const answer = await ctx.b.call(era, "list_atoms", { limit: 100 });
      const ids = (answer.result?.structuredContent?.atoms ?? []).map((atom) => atom.id).sort();
      const expected = story.bAtoms.map((atom) => atom.id).sort();
      return {
        text: answer.text,
        ok: JSON.stringify(ids) === JSON.stringify(expected),
        note: `B ${era} list_atoms: ${ids.join(", ")}`,
      };
    }),
    async () => {
      const answer = await ctx.b.call("modern", "kb_stats", {});
      const atoms = answer.result?.structuredContent?.atoms;
      return { text: answer.text, ok: atoms === ctx.state.bAtoms, note: `B kb_stats atoms = ${atoms}` };
    },
  ]);
}
