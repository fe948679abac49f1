// Step 4: A's injected document is ingested while B ingests a clean one, at the same time. B's atoms must equal
// those of a control run of the same clean document on a fresh tenant; A's atoms carry injection flags; and every
// run served one tenant (run ids from the atoms' provenance are disjoint; locally, step 7 also reads the run
// objects' own storage).
import { leaks } from "../cells.mjs";

const SOURCE = (id) => `doc:${id}`;

/** An extracted atom reduced to what must be equal between two runs of the same document. */
const shape = (atom) => JSON.stringify({ text: atom.text, title: atom.title, tags: atom.tags, flags: atom.flags });

async function atomsOfSource(who, source) {
  const out = [];
  let cursor;
  for (let page = 0; page < 20; page++) {
    const listed = await who.ok("modern", "list_atoms", { limit: 100, ...(cursor ? { cursor } : {}) });
    for (const atom of listed.atoms ?? []) {
      if (atom.source === source) out.push((await who.ok("legacy", "get_atom", { id: atom.id })).atom);
    }
    cursor = listed.next_cursor;
    if (!cursor || !(listed.atoms ?? []).length) break;
  }
  return out;
}

export async function extraction(ctx) {
  const { matrix, story } = ctx;
  const channel = "extraction run";
  const clean = story.cleanDocument;
  const control = ctx.control ?? ctx.b;

  // The control run: the same clean document, alone, on a fresh tenant (or on B alone before the concurrent run
  // when no third tenant is available against a deployment: then it is purged again before B's run).
  const controlId = ctx.control ? clean.id : `${clean.id}-solo`;
  await control.ok("modern", "put_document", { ...clean, id: controlId });
  await control.ok("modern", "ingest_document", { document_id: controlId });
  const controlAtoms = await atomsOfSource(control, SOURCE(controlId));
  if (!ctx.control) await ctx.b.ok("modern", "purge_source", { source: SOURCE(controlId) });

  await ctx.b.ok("modern", "put_document", clean);
  const [runA, runB] = await Promise.all([
    ctx.a.ok("modern", "ingest_document", { document_id: story.injectedDocument.id }),
    ctx.b.ok("legacy", "ingest_document", { document_id: clean.id }),
  ]);
  await ctx.rebaseline();
  const atomsA = await atomsOfSource(ctx.a, SOURCE(story.injectedDocument.id));
  const atomsB = await atomsOfSource(ctx.b, SOURCE(clean.id));
  ctx.state.runs = {
    a: [...new Set(atomsA.map((atom) => atom.provenance?.run))],
    b: [...new Set(atomsB.map((atom) => atom.provenance?.run))],
  };

  await matrix.cell(channel, "B's atoms while A's injected document runs", "equal to the control run", async () => {
    const mine = atomsB.map(shape).sort();
    const reference = controlAtoms.map(shape).sort();
    const found = leaks(JSON.stringify(atomsB), story.needlesOfA);
    const equal = mine.length > 0 && JSON.stringify(mine) === JSON.stringify(reference);
    return {
      ok: equal && found.length === 0 && runB.status === "done",
      observed: `${mine.length} atom(s) in B, ${reference.length} in the control; ${equal ? "equal" : "DIFFERENT"}; ${found.length} leak(s)`,
      counts: { atomsB: mine.length, atomsControl: reference.length, leaked: found.length },
      evidence: [
        `control: ${ctx.control ? `fresh tenant ${ctx.control.tenant}` : "B alone, before the concurrent run (no third tenant supplied)"}`,
        `B run: ${JSON.stringify(runB).slice(0, 240)}`,
        ...atomsB.map((atom) => `B atom: ${atom.text.slice(0, 100)} flags ${JSON.stringify(atom.flags)}`),
      ],
    };
  });

  await matrix.cell(channel, "A's injected document", "atoms kept as data, injection flagged", async () => {
    const flagged = atomsA.filter((atom) => atom.flags.length > 0);
    const injected = atomsA.filter((atom) => /ignore previous|tool_call|im_start|administrator/i.test(atom.text));
    const unflagged = injected.filter((atom) => atom.flags.length === 0);
    return {
      ok: runA.status === "done" && injected.length > 0 && unflagged.length === 0 && runA.flagged === flagged.length,
      observed: `${atomsA.length} atom(s), ${flagged.length} flagged (run says ${runA.flagged}); ${unflagged.length} injected atom(s) unflagged`,
      counts: { atoms: atomsA.length, flagged: flagged.length },
      evidence: atomsA.map((atom) => `A atom: ${atom.text.slice(0, 90)} flags ${JSON.stringify(atom.flags)}`),
    };
  });

  await matrix.cell(channel, "run objects per tenant (from provenance)", "disjoint run ids", async () => {
    const { a, b } = ctx.state.runs;
    const shared = a.filter((run) => b.includes(run));
    const intact = await ctx.checkA();
    return {
      ok: a.length > 0 && b.length > 0 && !a.includes(undefined) && shared.length === 0 && intact.ok,
      observed: `A runs ${a.length}, B runs ${b.length}, shared ${shared.length}; ${intact.detail}`,
      counts: { runsA: a.length, runsB: b.length, shared: shared.length },
      evidence: [`A: ${a.join(", ")}`, `B: ${b.join(", ")}`],
    };
  });
}
