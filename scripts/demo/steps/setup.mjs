// Step 1: A stores a sensitive atom (the canary) and a poisoned atom, uploads an injected document; B stores its
// own atoms; both eras of client are connected for every caller, and whoami names the token's tenant and subject.
import { readFileSync } from "node:fs";
import { leaks } from "../cells.mjs";
import { ERAS } from "../context.mjs";

export async function setup(ctx) {
  const { matrix, story } = ctx;
  const callers = [ctx.a, ctx.a2, ctx.b, ctx.control].filter(Boolean);
  await matrix.cell(
    "setup",
    "every caller connects in both eras",
    "whoami = the token's tenant and subject",
    async () => {
      const evidence = [];
      let good = 0;
      for (const who of callers) {
        for (const era of ERAS) {
          const me = await who.ok(era, "whoami", {});
          const right = me.tenant === who.tenant && me.subject === who.subject;
          if (right) good++;
          evidence.push(`${who.label} ${era}: ${me.tenant}/${me.subject} protocol ${me.protocolVersion}`);
        }
      }
      return {
        ok: good === callers.length * 2,
        observed: `${good}/${callers.length * 2} sessions right`,
        counts: { sessions: good },
        evidence,
      };
    },
  );

  if (ctx.local) {
    await matrix.cell("setup", "the project's .dev.vars is not read", "only the demo's own settings", async () => {
      const log = readFileSync(ctx.local.logFile, "utf8");
      const read = /\.dev\.vars/.test(log);
      return { ok: !read, observed: read ? "wrangler loaded .dev.vars" : "no .dev.vars in the server log" };
    });
  }

  await matrix.cell("setup", "A stores a canary atom and a poisoned atom", "both read back in A", async () => {
    const added = await ctx.a.ok("modern", "add_atoms", { atoms: story.aAtoms });
    const secret = await ctx.a.ok("legacy", "get_atom", { id: "a-secret" });
    await ctx.rebaseline();
    const ok = secret.atom?.text === story.aAtoms[0].text && ctx.state.aAtoms === story.aAtoms.length;
    const poisonFlags = (await ctx.a.ok("modern", "get_atom", { id: "a-poison" })).atom?.flags ?? [];
    return {
      ok: ok && poisonFlags.length > 0,
      observed: `${ctx.state.aAtoms} atoms in A; poisoned atom flagged ${JSON.stringify(poisonFlags)}`,
      counts: { atoms: ctx.state.aAtoms },
      evidence: [
        `add_atoms: ${JSON.stringify(added).slice(0, 300)}`,
        `canary ${story.canary}`,
        `poison marker ${story.poison}`,
      ],
    };
  });

  await matrix.cell("setup", "A uploads an injected document", "stored, encrypted, readable by A", async () => {
    const put = await ctx.a.ok("modern", "put_document", story.injectedDocument);
    const back = await ctx.a.call("legacy", "get_document", { id: story.injectedDocument.id });
    const ok = !back.refused && leaks(back.text, [story.mark]).length === 1;
    return {
      ok,
      observed: `document ${put.document?.id ?? put.id ?? "?"} stored; A reads its marker back: ${ok}`,
      evidence: [JSON.stringify(put).slice(0, 300)],
    };
  });

  await matrix.cell("setup", "B stores its own atoms", "B sees exactly its atoms", async () => {
    await ctx.b.ok("legacy", "add_atoms", { atoms: story.bAtoms });
    const stats = await ctx.b.ok("modern", "kb_stats", {});
    ctx.state.bAtoms = stats.atoms;
    return {
      ok: stats.atoms === story.bAtoms.length,
      observed: `${stats.atoms} atoms in B`,
      counts: { atoms: stats.atoms },
    };
  });
}
