// Scenario 2, in-place document overwrites. Each writer overwrites one document id again and again with distinct
// known bodies (PUT /v1/documents/:id). Invariant after each restart: the document is readable (never
// ERR_DECRYPT, never missing once acknowledged) and equals the last acknowledged body or a body whose write was
// not acknowledged since then (in flight at the kill). The observed body then becomes the known state.
import { getDocument, putDocument } from "../client.mjs";
import { killDuring } from "../kill.mjs";
import { words } from "../rng.mjs";

const GROUP = "2 document overwrites";
const DOCS = 2;
const MAX_WRITES_PER_ROUND = 400;

export async function documentOverwrites(ctx) {
  const rng = ctx.rng.fork("documents");
  const client = await ctx.tenantClient(`f-docs-${ctx.seed}`);
  const docs = Array.from({ length: DOCS }, (_, d) => ({
    id: `doc-${d}`,
    version: 0,
    acknowledged: null,
    pending: [],
  }));
  // Bodies are distinct (a version number per document) and depend only on the seed and the write's position.
  const body = (wrng, doc) => Buffer.from(`${doc.id} v${++doc.version}\n${words(wrng, wrng.int(200, 12_000))}\n`);

  for (let round = 1; round <= ctx.killPoints; round++) {
    const delayMs = rng.int(300, 2500);
    const writerRngs = docs.map((doc) => rng.fork(`r${round}${doc.id}`));
    let writes = 0;
    await killDuring(ctx, {
      scenario: "documents",
      round,
      delayMs,
      workload: (stop) =>
        Promise.all(
          docs.map(async (doc, d) => {
            for (let n = 0; n < MAX_WRITES_PER_ROUND && !stop.stopped; n++) {
              const bytes = body(writerRngs[d], doc);
              doc.pending.push(bytes);
              try {
                await putDocument(ctx.base, client.token, doc.id, bytes);
                doc.acknowledged = bytes;
                doc.pending = [];
                writes++;
              } catch {
                return;
              }
            }
          }),
        ),
    });
    ctx.figures.acknowledgedWrites.documents += writes;

    for (const doc of docs) {
      const started = Date.now();
      const got = await getDocument(ctx.base, client.token, doc.id);
      const problems = [];
      let outcome = "";
      if (got.status !== 200) {
        if (doc.acknowledged || got.status !== 404) problems.push(`HTTP ${got.status} ${got.text.slice(0, 120)}`);
        else outcome = "never acknowledged, absent";
      } else if (doc.acknowledged?.equals(got.bytes)) {
        outcome = "last acknowledged body";
      } else if (doc.pending.some((bytes) => bytes.equals(got.bytes))) {
        outcome = "the body in flight at the kill";
      } else {
        problems.push(
          `body (${got.bytes.length} bytes, "${got.text.slice(0, 24)}…") is neither the last acknowledged nor in flight`,
        );
      }
      ctx.figures.acknowledgedChecked += doc.acknowledged ? 1 : 0;
      if (problems.length && doc.acknowledged) ctx.figures.lost++;
      ctx.report.verdict(
        GROUP,
        `kill ${round} (${delayMs} ms): ${doc.id} readable and one of the allowed bodies`,
        problems,
        `${outcome} (${writes} overwrites acknowledged this round)`,
        started,
      );
      if (got.status === 200) {
        doc.acknowledged = got.bytes;
        doc.pending = [];
      }
    }
  }
}
