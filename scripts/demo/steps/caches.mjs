// Step 5: the same content embedded in A and then in B gives B no cache hit, counted by the embedding cache itself
// (kb_stats.embeddingCache of each tenant); a second embedding in B hits B's own entry (the control: hits are
// countable, so zero means zero). Model extraction's cache keys need Workers AI and AI Gateway: skipped here.
const statsOf = async (who) => (await who.ok("modern", "kb_stats", {})).embeddingCache;

export async function caches(ctx) {
  const { matrix, story } = ctx;
  const channel = "caches";
  const first = await statsOf(ctx.a);
  if (!first?.cacheable) {
    matrix.skip(
      channel,
      "same content in A and B: no cross-tenant cache hit",
      first
        ? "the server's embedder bypasses the embedding cache (EMBEDDER=local); run with EMBEDDER=local-cached or workers-ai"
        : "the server's kb_stats has no embeddingCache statistics",
    );
  } else {
    await matrix.cell(
      channel,
      "same content in A and B: no cross-tenant cache hit",
      "B: 0 hits, 1 miss; then 1 hit of its own",
      async () => {
        const evidence = [];
        const before = { a: await statsOf(ctx.a), b: await statsOf(ctx.b) };
        await ctx.a.ok("modern", "add_atoms", { atoms: [{ id: "a-same", text: story.sameText }] });
        await ctx.a.ok("modern", "add_atoms", { atoms: [{ id: "a-same-2", text: story.sameText }] });
        await ctx.rebaseline();
        const afterA = await statsOf(ctx.a);
        await ctx.b.ok("legacy", "add_atoms", { atoms: [{ id: "b-same", text: story.sameText }] });
        const afterB1 = await statsOf(ctx.b);
        await ctx.b.ok("modern", "add_atoms", { atoms: [{ id: "b-same-2", text: story.sameText }] });
        const afterB2 = await statsOf(ctx.b);
        ctx.state.cachePlayed = true;
        const delta = (x, y) => ({ hits: y.hits - x.hits, misses: y.misses - x.misses });
        const a = delta(before.a, afterA);
        const b1 = delta(before.b, afterB1);
        const b2 = delta(afterB1, afterB2);
        evidence.push(`A: ${JSON.stringify(before.a)} -> ${JSON.stringify(afterA)}`);
        evidence.push(`B first: ${JSON.stringify(before.b)} -> ${JSON.stringify(afterB1)}`);
        evidence.push(`B second: -> ${JSON.stringify(afterB2)}`);
        const aAfterB = await statsOf(ctx.a);
        evidence.push(`A after B's embeddings: ${JSON.stringify(aAfterB)}`);
        const ok =
          a.misses === 1 &&
          a.hits === 1 &&
          b1.hits === 0 &&
          b1.misses === 1 &&
          b2.hits === 1 &&
          b2.misses === 0 &&
          aAfterB.hits === afterA.hits &&
          aAfterB.misses === afterA.misses;
        return {
          ok,
          observed: `A +${a.hits} hit/+${a.misses} miss; B first +${b1.hits} hit/+${b1.misses} miss; B second +${b2.hits} hit/+${b2.misses} miss; A unchanged by B: ${aAfterB.hits === afterA.hits}`,
          counts: { aHits: a.hits, aMisses: a.misses, bCrossHits: b1.hits, bMisses: b1.misses, bOwnHits: b2.hits },
          evidence,
        };
      },
    );
    await ctx.attacks(
      channel,
      "cache entries reach B only as B's own",
      "B searches of A's cached text find B's atom only",
      [
        async () => {
          const answer = await ctx.b.call("modern", "search", { query: story.sameText, top_k: 10 });
          const ids = (answer.result?.structuredContent?.results ?? []).map((hit) => hit.id);
          return {
            text: answer.text,
            ok: !ids.includes("a-same") && ids.includes("b-same"),
            note: `B search of the shared text: ${ids.join(", ")}`,
          };
        },
      ],
    );
  }
  matrix.skip(
    channel,
    "model extraction cache keys per tenant",
    "model extraction needs Workers AI and an AI Gateway (not available to wrangler dev locally); the tenant-scoped key is covered by the unit tests",
  );
}
