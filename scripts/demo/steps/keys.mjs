// Step 7: keys and offboarding. Locally (storage access while the server is stopped): A's sealed atom and vector
// rows, A's vector pages and A's wrapped data keys are copied into other tenants' storage and must not open there;
// the run objects' own storage shows one tenant each. Then A is offboarded: keys destroyed, every route refused,
// the purge completes with a receipt; a copy of A's storage taken before the shred opens nothing after a master
// key epoch rotation (checked by the server and offline with the current master secret). Against a deployment,
// the storage parts are skipped (no file access) and the probe tenants are offboarded at the end.

import { createHash } from "node:crypto";
import { rmSync } from "node:fs";
import { ERAS } from "../context.mjs";
import { copyDatabase, copyR2Object, deleteR2Object, objectFiles, open, runRecord, tenantFiles } from "../storage.mjs";
import { offboard, rotatedVars, rotationAfterShred } from "./offboarding.mjs";

export async function keysAndOffboarding(ctx) {
  const local = ctx.local;
  if (local) await storageCopies(ctx);
  else {
    for (const attack of [
      "A's sealed atoms and vectors copied into B",
      "A's document ciphertext copied into B",
      "A's vector pages copied into B",
      "A's wrapped keys copied into another tenant",
    ]) {
      ctx.matrix.skip("keys", attack, "needs the server's storage files; run the demo locally");
    }
    ctx.matrix.skip(
      "extraction run",
      "run objects' own storage",
      "needs the server's storage files; run the demo locally",
    );
    ctx.matrix.skip(
      "caches",
      "embedding cache keys in storage",
      "needs the server's storage files; run the demo locally",
    );
  }
  const copy = local ? await preShredCopy(ctx) : null;
  await offboard(ctx, ctx.a, "A");
  if (local) await rotationAfterShred(ctx, copy);
  else {
    ctx.matrix.skip(
      "keys",
      "pre-shred copy of A after a master epoch rotation",
      "needs the server's storage files and master secrets; run the demo locally",
    );
    for (const [who, label] of [
      [ctx.b, "B"],
      [ctx.control, "C"],
    ])
      if (who) await offboard(ctx, who, label, { probeCleanup: true });
  }
}

async function storageCopies(ctx) {
  const { matrix, tenants, local, story } = ctx;
  const channel = "keys";
  // What B and C hold before their files are tampered with, to compare after the copies are undone.
  ctx.state.beforeCopies = {
    b: (await ctx.b.ok("modern", "kb_stats", {})).atoms,
    c: (await ctx.control.ok("modern", "kb_stats", {})).atoms,
  };
  await local.server.stop();
  const files = tenantFiles(local.persist);
  const [fa, fb, fc] = [files[tenants.a], files[tenants.b], files[tenants.control]];
  if (!fa || !fb || !fc) throw new Error(`tenant object files not found (have ${Object.keys(files).join(", ")})`);
  const backups = { b: `${fb.file}.demo-backup`, c: `${fc.file}.demo-backup` };
  copyDatabase(fb.file, backups.b);
  copyDatabase(fc.file, backups.c);

  // Run objects: the ids each tenant recorded for its runs, and the tenant each run object's own storage names.
  const runObjects = objectFiles(local.persist, "ExtractionRun");
  const listed = {};
  for (const [label, f] of [
    ["a", fa],
    ["b", fb],
    ["c", fc],
  ]) {
    const db = open(f.file);
    listed[label] = db
      .prepare("SELECT object_ids FROM extraction_runs")
      .all()
      .flatMap((row) => JSON.parse(row.object_ids));
    db.close();
  }
  const records = runObjects.map(({ id, file }) => ({ id, record: runRecord(file) }));
  const cacheRows = {};
  for (const [tenant, f] of Object.entries(files)) {
    const db = open(f.file);
    cacheRows[tenant] = db.prepare("SELECT tenant, model, content_hash FROM embedding_cache").all();
    db.close();
  }

  const db = open(fb.file);
  db.exec(`ATTACH DATABASE '${fa.file.replace(/'/g, "''")}' AS src`);
  const moved = {
    atoms: db
      .prepare(
        `INSERT INTO main.atoms SELECT ?, 'stolen-secret', (SELECT COALESCE(MAX(seq), 0) + 1 FROM main.atoms WHERE tenant = ?), key_version, sealed, source_token, content_token, created_at, updated_at FROM src.atoms WHERE tenant = ? AND id = 'a-secret'`,
      )
      .run(tenants.b, tenants.b, tenants.a).changes,
    vectorRows: db
      .prepare(
        `INSERT INTO main.vector_rows SELECT ?, 'stolen-secret', key_version, sealed FROM src.vector_rows WHERE tenant = ? AND atom_id = 'a-secret'`,
      )
      .run(tenants.b, tenants.a).changes,
  };
  db.prepare("DELETE FROM main.vector_pages WHERE tenant = ?").run(tenants.b);
  moved.vectorPages = db
    .prepare("INSERT INTO main.vector_pages SELECT ?, page, key_version, sealed FROM src.vector_pages WHERE tenant = ?")
    .run(tenants.b, tenants.a).changes;
  const copied = copyDocument(db, local.persist, tenants, story.injectedDocument.id);
  moved.document = copied.rows;
  db.exec("DETACH DATABASE src");
  db.close();
  const dc = open(fc.file);
  dc.exec(`ATTACH DATABASE '${fa.file.replace(/'/g, "''")}' AS src`);
  dc.prepare("DELETE FROM main.tenant_keys WHERE tenant = ?").run(tenants.control);
  moved.keys = dc
    .prepare(
      "INSERT INTO main.tenant_keys SELECT ?, version, epoch, wrapped, created_at FROM src.tenant_keys WHERE tenant = ?",
    )
    .run(tenants.control, tenants.a).changes;
  dc.exec("DETACH DATABASE src");
  dc.close();
  await local.server.start();

  const failsClosed = (answer) =>
    answer.refused && ["ERR_DECRYPT", "ERR_KEY_UNAVAILABLE", "ERR_INTERNAL", "RPC -32603"].includes(answer.code);
  await ctx.attacks(channel, "A's sealed atoms and vectors copied into B", "do not open in B (ERR_DECRYPT)", [
    async () => ({
      text: "",
      ok: moved.atoms === 1 && moved.vectorRows === 1,
      note: `copied into B's file: ${moved.atoms} atom row, ${moved.vectorRows} vector row`,
    }),
    ...ERAS.map((era) => async () => {
      const answer = await ctx.b.call(era, "get_atom", { id: "stolen-secret" });
      return {
        text: answer.text,
        ok: failsClosed(answer),
        note: `B ${era} get_atom stolen-secret: ${answer.refused ? `refused ${answer.code}` : "answered"}`,
      };
    }),
  ]);
  await ctx.attacks(channel, "A's document ciphertext copied into B", "does not open in B", [
    async () => ({
      text: "",
      ok: moved.document === 1 && copied.r2 === 1,
      note: `copied: ${moved.document} document row into B's file, ${copied.r2} R2 object under B's prefix`,
    }),
    ...ERAS.map((era) => async () => {
      const answer = await ctx.b.call(era, "get_document", { id: "stolen-doc" });
      return {
        text: answer.text,
        ok: failsClosed(answer),
        note: `B ${era} get_document stolen-doc: ${answer.refused ? `refused ${answer.code}` : "answered"}`,
      };
    }),
    async () => {
      const { status, text, aborted } = await streamed(ctx, "/v1/documents/stolen-doc");
      return {
        text,
        ok: status >= 400 || aborted,
        note: `B GET /v1/documents/stolen-doc: HTTP ${status}${aborted ? ", stream aborted" : ""}, ${text.length} character(s) received`,
      };
    },
  ]);
  await ctx.attacks(channel, "A's vector pages copied into B", "B's search opens none of A's vectors", [
    async () => ({
      text: "",
      ok: moved.vectorPages > 0,
      note: `${moved.vectorPages} of A's vector pages in place of B's`,
    }),
    ...ERAS.map((era) => async () => {
      const answer = await ctx.b.call(era, "search", { query: story.aAtoms[0].text, top_k: 50 });
      const ids = (answer.result?.structuredContent?.results ?? []).map((hit) => hit.id);
      const ok =
        (answer.refused && failsClosed(answer)) ||
        (!answer.refused && !ids.includes("a-secret") && !ids.includes("stolen-secret"));
      return {
        text: answer.text,
        ok,
        note: `B ${era} search for A's text: ${answer.refused ? `refused ${answer.code}` : `hits ${ids.join(", ") || "none"}`}`,
      };
    }),
  ]);
  await ctx.attacks(
    channel,
    "A's wrapped keys copied into another tenant",
    "do not unwrap there: its data fails closed",
    [
      async () => ({
        text: "",
        ok: moved.keys > 0,
        note: `${moved.keys} of A's wrapped key row(s) in place of the control tenant's`,
      }),
      ...ERAS.flatMap((era) => [
        async () => {
          const answer = await ctx.control.call(era, "list_atoms", { limit: 10 });
          return {
            text: answer.text,
            ok: failsClosed(answer),
            note: `C ${era} list_atoms: ${answer.refused ? `refused ${answer.code}` : "answered"}`,
          };
        },
        async () => {
          const answer = await ctx.control.call(era, "search", { query: "apples north barn" });
          return {
            text: answer.text,
            ok: failsClosed(answer),
            note: `C ${era} search: ${answer.refused ? `refused ${answer.code}` : "answered"}`,
          };
        },
      ]),
    ],
  );

  if (!ctx.state.runs) matrix.skip("extraction run", "run objects' own storage", "step 4 was not played (--steps)");
  else
    await matrix.cell(
      "extraction run",
      "run objects' own storage",
      "each run object named by one tenant only",
      async () => {
        const all = [...listed.a, ...listed.b, ...listed.c];
        const shared = all.filter((id, i) => all.indexOf(id) !== i);
        const owner = (id) =>
          listed.a.includes(id)
            ? tenants.a
            : listed.b.includes(id)
              ? tenants.b
              : listed.c.includes(id)
                ? tenants.control
                : null;
        const wrong = records.filter(({ id, record }) => record && record.tenant !== owner(id));
        const unlisted = records.filter(({ id }) => owner(id) === null);
        return {
          ok: all.length > 0 && shared.length === 0 && wrong.length === 0 && unlisted.length === 0,
          observed: `${all.length} run object id(s) recorded (A ${listed.a.length}, B ${listed.b.length}, C ${listed.c.length}), ${shared.length} shared; ${records.length} object file(s), ${records.filter((r) => r.record).length} still holding a record, ${wrong.length} naming another tenant, ${unlisted.length} unlisted`,
          counts: { objects: all.length, shared: shared.length, wrongTenant: wrong.length },
          evidence: records.map(
            ({ id, record }) =>
              `${id.slice(0, 16)}…: ${record ? `run of ${record.tenant}` : "wiped"} (listed by ${owner(id)})`,
          ),
        };
      },
    );

  await cacheKeys(ctx, cacheRows);

  await local.server.stop();
  copyDatabase(backups.b, fb.file);
  copyDatabase(backups.c, fc.file);
  deleteR2Object(local.persist, copied.key);
  rmSync(backups.b, { force: true });
  rmSync(backups.c, { force: true });
  ctx.state.files = files;
}

/** Stops the server, copies A's object file aside (the attacker's pre-shred copy), starts again. */
async function preShredCopy(ctx) {
  const { local, tenants } = ctx;
  if (!ctx.state.files) {
    await local.server.stop();
    ctx.state.files = tenantFiles(local.persist);
  }
  const file = ctx.state.files[tenants.a].file;
  const copy = `${file}.pre-shred`;
  copyDatabase(file, copy);
  // Restarted with master key epoch d2 current (d1 still live): the rotation's rewrap runs after A's offboarding.
  await local.server.start(rotatedVars(local));
  await ctx.attacks("keys", "B and C intact after the copies are undone", "their own data opens again", [
    async () => {
      const answer = await ctx.b.call("modern", "get_atom", { id: "b-orchard" });
      return {
        text: answer.text,
        ok: !answer.refused,
        note: `B get_atom b-orchard: ${answer.refused ? answer.code : "ok"}`,
      };
    },
    ...[
      [ctx.b, "B", "b"],
      [ctx.control, "C", "c"],
    ].map(([who, label, key]) => async () => {
      const listed = await who.call("legacy", "list_atoms", { limit: 100 });
      const atoms = listed.refused ? null : listed.result.structuredContent.atoms.length;
      const expected = ctx.state.beforeCopies?.[key];
      return {
        text: listed.text,
        ok: atoms === expected,
        note: `${label} list_atoms: ${listed.refused ? `refused ${listed.code}` : `${atoms} atom(s)`} (before the copies: ${expected})`,
      };
    }),
  ]);
  return { file, copy };
}

/**
 * A's stored document, as an attacker with storage access would move it: A's documents row into B's database (as
 * B's "stolen-doc", same generation and key version) and A's R2 ciphertext under B's prefix, byte for byte. `db` is
 * B's database with A's attached as `src`.
 */
function copyDocument(db, persist, tenants, id) {
  const row = db
    .prepare(
      "SELECT generation, key_version, size, content_type, created_at, updated_at FROM src.documents WHERE tenant = ? AND id = ?",
    )
    .get(tenants.a, id);
  if (!row) return { rows: 0, r2: 0, key: null };
  const objectKey = (tenant, name) => `t/${tenant}/docs/${name}${row.generation ? `/${row.generation}` : ""}`;
  const rows = db
    .prepare(
      `INSERT INTO main.documents (tenant, id, generation, key_version, size, content_type, created_at, updated_at)
       VALUES (?, 'stolen-doc', ?, ?, ?, ?, ?, ?)`,
    )
    .run(
      tenants.b,
      row.generation,
      row.key_version,
      row.size,
      row.content_type,
      row.created_at,
      row.updated_at,
    ).changes;
  const key = objectKey(tenants.b, "stolen-doc");
  return { rows, r2: copyR2Object(persist, objectKey(tenants.a, id), key), key };
}

/** GET with B's token, reading the body to its end: a body that fails mid-stream counts as aborted. */
async function streamed(ctx, path) {
  const response = await fetch(new URL(path, ctx.base), {
    headers: { authorization: `Bearer ${ctx.b.token}` },
    signal: AbortSignal.timeout(30_000),
  });
  try {
    return { status: response.status, text: await response.text(), aborted: false };
  } catch {
    return { status: response.status, text: "", aborted: true };
  }
}

/**
 * The embedding cache's own storage: in every tenant object's file, every cache row is keyed by that object's
 * tenant; the text both A and B embedded in step 5 has one entry in A's file and another in B's, none shared.
 */
async function cacheKeys(ctx, cacheRows) {
  const { tenants, story } = ctx;
  await ctx.matrix.cell("caches", "embedding cache keys in storage", "every row keyed by its own tenant", async () => {
    const foreign = Object.entries(cacheRows).flatMap(([tenant, rows]) => rows.filter((row) => row.tenant !== tenant));
    const hash = createHash("sha256").update(story.sameText, "utf8").digest("hex");
    const holders = Object.entries(cacheRows)
      .filter(([, rows]) => rows.some((row) => row.content_hash === hash))
      .map(([tenant]) => tenant);
    const played = ctx.state.cachePlayed === true;
    const sharedSeparately =
      !played || (holders.length === 2 && holders.includes(tenants.a) && holders.includes(tenants.b));
    const total = Object.values(cacheRows).reduce((n, rows) => n + rows.length, 0);
    return {
      ok: foreign.length === 0 && sharedSeparately,
      observed: `${total} cache row(s) in ${Object.keys(cacheRows).length} tenant file(s), ${foreign.length} keyed by another tenant${played ? `; the shared text is cached in ${holders.length} file(s), each under its own tenant` : ""}`,
      counts: { rows: total, foreign: foreign.length, ...(played ? { sharedTextEntries: holders.length } : {}) },
      evidence: Object.entries(cacheRows).map(
        ([tenant, rows]) =>
          `${tenant}: ${rows.length} row(s), tenants ${JSON.stringify([...new Set(rows.map((r) => r.tenant))])}, models ${JSON.stringify([...new Set(rows.map((r) => r.model))])}`,
      ),
    };
  });
}
