// Scenarios 5 and 6, ingest under kills. A large generated markdown document is ingested once cleanly on a
// reference tenant; each round ingests the same document (same id, so the same deterministic atom ids) on a fresh
// tenant, synchronously (wait=true) or queued (wait=false), kills the server mid-run, restarts and waits for the
// run to end. Invariant: the final atom set equals the clean run's, compared as (id, contentHash) for every atom
// and as exact text for a seeded sample (ids are SHA-256 of document, position and text hash by construction).
import { putDocument } from "../client.mjs";
import { killDuring } from "../kill.mjs";
import { words } from "../rng.mjs";
import { listAll, pollUntil, readTexts } from "../verify.mjs";

const DOC_ID = "big";
const SAMPLE = 40;
const RUN_TIMEOUT_MS = 180_000;
// A run whose driver died is resumed by the tenant object's alarm within RESUME_AFTER_MS (30 s) of its last step.
const SETTLE_MS = 45_000;

/** Markdown with headings and paragraphs of known words, about `bytes` long. */
export function generateMarkdown(rng, bytes) {
  const parts = [];
  let size = 0;
  let section = 0;
  while (size < bytes) {
    const part =
      rng.next() < 0.1 ? `## Section ${++section} ${words(rng, 3)}\n\n` : `${words(rng, rng.int(20, 160))}.\n\n`;
    parts.push(part);
    size += Buffer.byteLength(part);
  }
  return Buffer.from(parts.join(""));
}

/** The clean run, computed once per suite run and shared by scenarios 5, 6 and 7. */
export async function reference(ctx) {
  if (ctx.shared.reference) return ctx.shared.reference;
  const rng = ctx.rng.fork("ingest-document");
  const document = generateMarkdown(rng, ctx.docBytes);
  const client = await ctx.tenantClient(`f-ref-${ctx.seed}`);
  const started = Date.now();
  await putDocument(ctx.base, client.token, DOC_ID, document, "text/markdown");
  const ingestStarted = Date.now();
  const result = await client.call("ingest_document", { document_id: DOC_ID }, { timeoutMs: RUN_TIMEOUT_MS });
  const ingestMs = Date.now() - ingestStarted;
  const atoms = await atomSet(client);
  const sampleIds = [...atoms.keys()].filter((_, i) => i % Math.max(1, Math.floor(atoms.size / SAMPLE)) === 0);
  const texts = await readTexts(client, sampleIds);
  ctx.shared.reference = { document, atoms, texts, ingestMs };
  ctx.report.verdict(
    "5/6 ingest reference",
    `clean run of a ${(document.length / 1e6).toFixed(1)} MB markdown document`,
    result.status === "done" && atoms.size === result.atoms_written
      ? []
      : [`status ${result.status}, ${result.atoms_written} written, ${atoms.size} listed, error ${result.error}`],
    `${atoms.size} atoms in ${(ingestMs / 1000).toFixed(1)} s`,
    started,
  );
  ctx.figures.ingest = { documentBytes: document.length, referenceAtoms: atoms.size, referenceIngestMs: ingestMs };
  return ctx.shared.reference;
}

async function atomSet(client) {
  const map = new Map();
  for (const atom of await listAll(client)) {
    if (map.has(atom.id)) map.set(atom.id, `${map.get(atom.id)}+duplicate`);
    else map.set(atom.id, atom.contentHash);
  }
  return map;
}

/** A run handle anywhere in a message (progress notification, result or error data). */
function findRun(value) {
  if (!value || typeof value !== "object") return null;
  for (const key of ["run", "tenant-mcp-kb/run"]) {
    if (typeof value[key] === "string" && value[key].startsWith("h2.")) return value[key];
  }
  for (const inner of Object.values(value)) {
    const found = findRun(inner);
    if (found) return found;
  }
  return null;
}

export const syncIngest = (ctx) => ingestUnderKills(ctx, { wait: true, group: "5 synchronous ingest" });
export const queuedIngest = (ctx) => ingestUnderKills(ctx, { wait: false, group: "6 queued ingest" });

async function ingestUnderKills(ctx, { wait, group }) {
  const ref = await reference(ctx);
  const rng = ctx.rng.fork(wait ? "sync-ingest" : "queued-ingest");
  for (let round = 1; round <= ctx.killPoints; round++) {
    const tenant = `f-${wait ? "sync" : "queued"}-${ctx.seed}-${round}`;
    const client = await ctx.tenantClient(tenant);
    await putDocument(ctx.base, client.token, DOC_ID, ref.document, "text/markdown");
    // Kill somewhere between 5% and 60% of the clean run's duration (a queued run starts at once and may be
    // faster than the reference; "before the kill" in the report says where the kill actually landed).
    const fraction = 0.05 + 0.55 * rng.next();
    const delayMs = Math.round(fraction * ref.ingestMs);
    let handle = null;
    let answered = null;
    const note = { fraction: Number(fraction.toFixed(3)), beforeKill: "no progress seen" };
    if (!wait) {
      const queued = await client.call("ingest_document", { document_id: DOC_ID, wait: false });
      handle = queued.run;
    }
    await killDuring(ctx, {
      scenario: wait ? "sync-ingest" : "queued-ingest",
      round,
      delayMs,
      note,
      workload: async (stop) => {
        if (!wait) {
          // Watch the queued run until the kill, so the report says whether the kill landed mid-run.
          while (!stop.stopped) {
            const status = await client.call("ingest_status", { run: handle }, { timeoutMs: 5000 }).catch(() => null);
            if (!status) return;
            note.beforeKill = `${status.status}, ${status.segments} segments`;
            await new Promise((resolve) => setTimeout(resolve, 250));
          }
          return;
        }
        try {
          answered = await client.call(
            "ingest_document",
            { document_id: DOC_ID },
            {
              timeoutMs: RUN_TIMEOUT_MS,
              progressToken: `p-${round}`,
              onMessage: (message) => {
                handle ??= findRun(message);
                if (message.method === "notifications/progress")
                  note.beforeKill = `running, ${message.params.progress} segments`;
              },
            },
          );
          handle ??= answered.run;
          note.beforeKill = `answered: ${answered.status}`;
        } catch (error) {
          handle ??= findRun(error);
        }
      },
    });

    const started = Date.now();
    let final = null;
    let how;
    if (handle) {
      how = "polled ingest_status with the run handle";
      final = await pollUntil(
        async () => {
          const status = await client.call("ingest_status", { run: handle });
          return status.status === "done" || status.status === "failed" ? status : null;
        },
        { timeoutMs: RUN_TIMEOUT_MS, intervalMs: 1000 },
      );
    } else {
      // No handle reached the client: wait until the atom count reaches the clean run's or stops moving.
      how = "no run handle reached the client; waited for the atom count";
      let last = -1;
      let since = Date.now();
      final = await pollUntil(
        async () => {
          const { atoms } = await client.call("kb_stats", {});
          if (atoms >= ref.atoms.size) return { status: "count reached" };
          if (atoms !== last) {
            last = atoms;
            since = Date.now();
          } else if (Date.now() - since > SETTLE_MS) {
            return { status: `count stalled at ${atoms}` };
          }
          return null;
        },
        { timeoutMs: RUN_TIMEOUT_MS, intervalMs: 1000 },
      );
    }
    const finished = final?.status === "done" || final?.status === "count reached";
    ctx.report.verdict(
      group,
      `kill ${round} (${delayMs} ms, ${Math.round(fraction * 100)}%): run finishes after restart`,
      finished
        ? []
        : [
            `${how}: ${final ? JSON.stringify(final) : "no end within the bounded wait"} (before the kill: ${note.beforeKill})`,
          ],
      `${how}: ${final?.status}${final?.attempts ? `, ${final.attempts} attempt(s)` : ""} (before the kill: ${note.beforeKill})`,
      started,
    );

    const got = await atomSet(client);
    const missing = [...ref.atoms.keys()].filter((id) => !got.has(id));
    const extra = [...got.keys()].filter((id) => !ref.atoms.has(id));
    const differing = [...got].filter(([id, hash]) => ref.atoms.has(id) && ref.atoms.get(id) !== hash);
    const texts = await readTexts(
      client,
      [...ref.texts.keys()].filter((id) => got.has(id)),
    );
    const wrongTexts = [...texts].filter(([id, text]) => ref.texts.get(id) !== text);
    ctx.figures.acknowledgedChecked += ref.atoms.size;
    const problems = [];
    if (missing.length) problems.push(`${missing.length} of ${ref.atoms.size} atoms missing`);
    if (extra.length) problems.push(`${extra.length} atoms not in the clean run`);
    if (differing.length) problems.push(`${differing.length} atoms with another content hash or duplicated`);
    if (wrongTexts.length) problems.push(`${wrongTexts.length} sampled texts differ`);
    ctx.report.verdict(
      group,
      `kill ${round}: atom set equals the clean run`,
      problems,
      `${got.size} atoms, ${texts.size} texts sampled`,
    );
  }
}
