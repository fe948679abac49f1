// Scenario 1, sustained atom writes. Two writers send add_atoms batches (unique ids, known text) until the kill.
// Invariants after each restart: every acknowledged atom is readable and byte-exact; no id is listed twice; every
// listed id was sent; each unacknowledged batch is all or nothing, and once its outcome has been observed it stays
// (a present batch joins the acknowledged set, an absent one must never appear later).
import { killDuring } from "../kill.mjs";
import { words } from "../rng.mjs";
import { checkTexts, duplicates, listAll } from "../verify.mjs";

const GROUP = "1 sustained writes";
const WRITERS = 2;
const MAX_BATCHES_PER_WRITER = 200;

export async function sustainedWrites(ctx) {
  const rng = ctx.rng.fork("writes");
  const client = await ctx.tenantClient(`f-writes-${ctx.seed}`);
  const known = new Map(); // id -> text: acknowledged, or observed present after a crash
  const gone = new Set(); // ids of unacknowledged batches observed absent
  let unresolved = []; // unacknowledged batches: [{id, text}]

  for (let round = 1; round <= ctx.killPoints; round++) {
    const writerRngs = Array.from({ length: WRITERS }, (_, w) => rng.fork(`r${round}w${w}`));
    const delayMs = rng.int(400, 2500);
    let acknowledged = 0;
    await killDuring(ctx, {
      scenario: "writes",
      round,
      delayMs,
      workload: (stop) =>
        Promise.all(
          writerRngs.map(async (wrng, w) => {
            for (let n = 0; n < MAX_BATCHES_PER_WRITER && !stop.stopped; n++) {
              const size = wrng.int(5, 40);
              const batch = Array.from({ length: size }, (_, i) => {
                const id = `w${round}-${w}-${n}-${i}`;
                return { id, text: `${words(wrng, wrng.int(3, 60))} #${id}` };
              });
              try {
                await client.call("add_atoms", { atoms: batch });
                for (const atom of batch) known.set(atom.id, atom.text);
                acknowledged += size;
              } catch {
                unresolved.push(batch);
                return; // the server is gone (or refused): this writer's outcome is now unknown
              }
            }
          }),
        ),
    });
    ctx.figures.acknowledgedWrites.atoms += acknowledged;

    const started = Date.now();
    const listedAtoms = await listAll(client);
    const listed = listedAtoms.map((atom) => atom.id);
    const listedSet = new Set(listed);
    const dup = duplicates(listed);
    ctx.figures.duplicated += dup.length;

    // Unacknowledged batches: all or nothing; present ones must then be exact and stay.
    const partial = [];
    const nowPresent = new Map();
    for (const batch of unresolved) {
      const present = batch.filter((atom) => listedSet.has(atom.id)).length;
      if (present !== 0 && present !== batch.length) partial.push(`${batch[0].id}…: ${present}/${batch.length}`);
      for (const atom of batch) {
        if (listedSet.has(atom.id)) nowPresent.set(atom.id, atom.text);
        else gone.add(atom.id);
      }
    }
    const unresolvedCount = unresolved.length;
    unresolved = [];

    const { problems, missing, wrong, sampled } = await checkTexts(client, known, { listed: listedAtoms });
    ctx.figures.acknowledgedChecked += known.size;
    ctx.figures.lost += missing + wrong;
    ctx.report.verdict(
      GROUP,
      `kill ${round} (${delayMs} ms): every acknowledged atom readable and byte-exact`,
      problems
        .map((p) => `lost or wrong: ${p}`)
        .concat(missing + wrong > 0 ? [`${missing} missing, ${wrong} wrong`] : []),
      `${known.size} checked by content hash, ${sampled} read whole (${acknowledged} acknowledged this round), 0 lost`,
      started,
    );
    const unknown = listed.filter((id) => !known.has(id) && !nowPresent.has(id));
    const reappeared = listed.filter((id) => gone.has(id));
    ctx.report.verdict(
      GROUP,
      `kill ${round}: no duplicates, no unknown ids`,
      [
        ...(dup.length ? [`${dup.length} duplicated ids, e.g. ${dup[0]}`] : []),
        ...(unknown.length ? [`${unknown.length} ids never sent or already absent, e.g. ${unknown[0]}`] : []),
        ...(reappeared.length ? [`${reappeared.length} ids of absent batches reappeared`] : []),
      ],
      `${listed.length} listed`,
    );
    const extra = await checkTexts(client, nowPresent, { listed: listedAtoms });
    ctx.report.verdict(
      GROUP,
      `kill ${round}: unacknowledged batches all-or-nothing`,
      [...partial.map((p) => `partial batch ${p}`), ...extra.problems.map((p) => `present but ${p}`)],
      `${unresolvedCount} unacknowledged batches, ${nowPresent.size} of their atoms present`,
    );
    for (const [id, text] of nowPresent) known.set(id, text);
  }
}
