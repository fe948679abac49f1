// The file side of the forensics e2e check (scripts/e2e/forensics.mjs): the scan of every file of a persisted
// folder as e2e checks, the positive control of the detectors, and the tenant's sealed blobs read from a read-only
// copy of its SQLite file (node:sqlite).
import { randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { embeddingText } from "./forensic-data.mjs";
import { chunksOf, findAll, needleForms, unitFloatRuns, walkFiles } from "./forensic-scan.mjs";
import { DIMENSIONS, publicEmbed, quantize } from "./public-embedder.mjs";

export const GROUP = "forensics";
export const TOP_K = 12;
export const BLOB_KINDS = ["wrappedKeys", "pages", "rows", "atoms"];

export async function scanChecks(report, when, dir, detector) {
  const files = walkFiles(dir);
  const bytes = files.reduce((sum, file) => sum + file.bytes.length, 0);
  const rel = (file, offset) => `${relative(dir, file.path)}@${offset}`;
  await report.check(GROUP, `${when}: no canary word or code in any file (UTF-8, UTF-16, base64)`, () => {
    const hits = secretHits(files, detector.secret).map(
      (hit) => `${hit.what} (${hit.form}) in ${rel(hit.file, hit.offset)}`,
    );
    if (hits.length) throw new Error(hits.slice(0, 6).join("; "));
    return `${files.length} files, ${(bytes / 1024).toFixed(0)} KiB (${kindsOf(files, dir)})`;
  });
  const runs = [];
  await report.check(GROUP, `${when}: no unit-norm float32 run of ${DIMENSIONS} dimensions at any alignment`, () => {
    for (const file of files) for (const run of unitFloatRuns(file.bytes, DIMENSIONS)) runs.push({ file, ...run });
    if (runs.length)
      throw new Error(
        runs
          .slice(0, 6)
          .map((run) => `${rel(run.file, run.offset)} (|v|² ${run.norm2})`)
          .join("; "),
      );
    return "none";
  });
  await report.check(GROUP, `${when}: no float32 or int8 copy of an atom's vector (public hash)`, () => {
    const found = [];
    for (const atom of detector.atoms) {
      const vector = publicEmbed(embeddingText(atom));
      for (const [as, data] of [
        ["float32", vector],
        ["int8", quantize(vector)],
      ]) {
        const where = locate(files, new Uint8Array(data.buffer), dir);
        if (where) found.push(`${atom.id} ${as} at ${where}`);
      }
    }
    if (found.length) throw new Error(found.join("; "));
    return `${detector.atoms.length} atoms, float32 and int8, searched in 32-byte pieces`;
  });
  await report.check(
    GROUP,
    `${when}: dictionary inversion recovers none of the atoms' words`,
    () => {
      const recovered = [];
      for (const run of runs) {
        const vector = floatWindow(run.file.bytes, run.offset);
        const words = new Set(detector.inverter.rank(vector, TOP_K));
        const hit = detector.targets.flatMap((target) => target.words.filter((word) => words.has(word)));
        if (detector.codes.rank(vector, TOP_K).includes(detector.secret.code)) hit.push("the code");
        if (hit.length) recovered.push(`${rel(run.file, run.offset)}: ${[...new Set(hit)].length} word(s)`);
      }
      for (const file of files) {
        for (const hit of detector.inverter.rawWindowRecoveries(file.bytes, detector.targets, rawOptions)) {
          recovered.push(
            `${rel(file, hit.offset)} as ${hit.as}: z ${hit.z}, ${hit.recovered.length} of ${hit.name}'s words`,
          );
        }
      }
      if (recovered.length) throw new Error(recovered.slice(0, 6).join("; "));
      return `${detector.inverter.words.length} words, ${runs.length} vector-shaped runs and every raw window (int8, float32)`;
    },
    { timeoutMs: 180_000 },
  );
  return { files };
}

/** "do 12, r2 6, ..." by the folder under v3/ (Durable Object SQLite, R2 blobs and metadata, traces, caches). */
function kindsOf(files, dir) {
  const counts = new Map();
  for (const file of files) {
    const parts = relative(dir, file.path).split("/");
    const kind = parts[0] === "v3" ? (parts[1] ?? "v3") : parts[0];
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  const wal = files.filter((file) => /-(wal|shm)$/.test(file.path)).length;
  return `${[...counts].map(([kind, n]) => `${kind} ${n}`).join(", ")}; ${wal} -wal/-shm`;
}

// A raw window counts as a recovery when an atom's words together stand 8 standard errors above the dictionary
// and 3 of them are in its top 12 (see Inverter.rawWindowRecoveries: a plaintext vector of an atom scores about
// 15 with 5 to 10 words, random bytes stay below 6).
const rawOptions = { k: TOP_K, minZ: 8, minWords: 3 };
// The attacker's ranking on a plaintext vector puts 5 to 10 of an atom's 13-15 words in its top 12.
const RANKED_WORDS_MIN = 3;

function secretHits(files, secret) {
  const hits = [];
  for (const [what, value] of [
    ["canary", secret.canary],
    ["code", secret.code],
  ]) {
    for (const { form, bytes } of needleForms(value)) {
      for (const file of files) {
        for (const offset of findAll(file.bytes, bytes)) {
          // A code inside a longer run of digits (a timestamp) is a coincidence, not the atom's code.
          if (what === "code" && !form.startsWith("base64") && digitNeighbour(file.bytes, offset, bytes.length, form))
            continue;
          hits.push({ what, form, file, offset });
        }
      }
    }
  }
  return hits;
}

function digitNeighbour(bytes, offset, length, form) {
  const unit = form === "utf-8" ? 1 : 2;
  const at = (i) => (form === "utf-16be" ? bytes[i + 1] : bytes[i]);
  const isDigit = (i) => i >= 0 && i + unit <= bytes.length && at(i) >= 0x30 && at(i) <= 0x39;
  return isDigit(offset - unit) || isDigit(offset + length);
}

/** Where any 32-byte piece of `blob` occurs: "file@offset" or null. */
export function locate(files, blob, dir) {
  const pieces = blob.byteLength <= 64 ? [{ at: 0, bytes: Buffer.from(blob) }] : chunksOf(blob, 32);
  if (pieces.length === 0) throw new Error(`a ${blob.byteLength}-byte blob has no piece specific enough to search`);
  for (const file of files) {
    for (const piece of pieces) {
      const at = file.bytes.indexOf(piece.bytes);
      if (at >= 0) return `${relative(dir, file.path)}@${at}`;
    }
  }
  return null;
}

export function foundIn(files, blob) {
  const head = Buffer.from(blob.subarray(0, Math.min(32, blob.byteLength)));
  return files.some((file) => file.bytes.indexOf(head) >= 0);
}

function floatWindow(bytes, offset) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: DIMENSIONS }, (_, d) => view.getFloat32(offset + d * 4, true));
}

/** The detectors on a synthetic buffer: random bytes with a plaintext vector, its int8 copy and the secrets. */
export function positiveControl(detector) {
  const atom = detector.atoms[0];
  const vector = publicEmbed(embeddingText(atom));
  const buffer = randomBytes(192 * 1024);
  Buffer.from(vector.buffer).copy(buffer, 1001); // unaligned float32
  Buffer.from(quantize(vector).buffer).copy(buffer, 40_003); // int8
  const f32 = Buffer.from(vector.buffer); // float32 cut by a 4-byte overflow page pointer, as SQLite stores blobs
  f32.copy(buffer, 80_000, 0, 700);
  Buffer.from([7, 0, 0, 0]).copy(buffer, 80_700);
  f32.copy(buffer, 80_704, 700);
  Buffer.from(detector.secret.canary, "utf16le").copy(buffer, 120_001);
  Buffer.from(`x${detector.secret.code}y`).copy(buffer, 130_001);
  const file = { path: "synthetic", bytes: buffer };
  const problems = [];
  const secrets = secretHits([file], detector.secret).map((hit) => hit.what);
  if (!secrets.includes("canary") || !secrets.includes("code")) problems.push(`secrets found: ${secrets}`);
  // A sparse vector starts or ends with zeros: a window a few values early or late has the same norm and may be
  // the one reported; it still overlaps the vector by far the most.
  const runs = unitFloatRuns(buffer, DIMENSIONS).map((run) => run.offset);
  const near = (offset) => runs.some((at) => Math.abs(at - offset) <= 64);
  if (!near(1001) || !near(80_000)) problems.push(`unit runs at ${runs}`);
  const target = detector.targets[0];
  const top = detector.inverter.rank(floatWindow(buffer, 1001), TOP_K).filter((word) => target.words.includes(word));
  if (top.length < RANKED_WORDS_MIN) problems.push(`ranking recovered ${top.length} words`);
  const found = detector.inverter.rawWindowRecoveries(buffer, [target], rawOptions);
  const rawNear = (as, offset) => found.some((hit) => hit.as === as && Math.abs(hit.offset - offset) <= 64);
  if (!rawNear("int8", 40_003) || !rawNear("float32", 1001)) {
    problems.push(`raw windows: ${found.map((hit) => `${hit.as}@${hit.offset}`)}`);
  }
  const nothing = detector.inverter.rawWindowRecoveries(randomBytes(64 * 1024), [target], rawOptions);
  if (nothing.length) problems.push("random bytes gave a recovery");
  if (problems.length) throw new Error(problems.join("; "));
  const z = found.map((hit) => hit.z).join("/");
  return `canary (UTF-16), code, 2 float32 runs (1 cut), ${top.length}/${target.words.length} words in the top ${TOP_K}, raw int8 and float32 windows recovered (z ${z}); none from random bytes`;
}

/**
 * The detectors on a real SQLite file: an atom's text and its float32 (three copies, one likely cut by an
 * overflow-page pointer) and int8 vectors in a blob spanning overflow pages, written and then DELETEd, so they
 * survive only in freed pages (SQLite's default, like the platform's). Every detector must find them there.
 */
export function sqliteControl(detector, work) {
  const { DatabaseSync } = loadSqlite();
  const path = join(work, "control", "leak.sqlite");
  mkdirSync(dirname(path), { recursive: true });
  const atom = detector.atoms[0];
  const vector = publicEmbed(embeddingText(atom));
  const blob = randomBytes(24 * 1024);
  for (const at of [2501, 6502, 10_503]) Buffer.from(vector.buffer).copy(blob, at);
  Buffer.from(quantize(vector).buffer).copy(blob, 14_001);
  const db = new DatabaseSync(path);
  try {
    db.exec(`CREATE TABLE leak (id INTEGER PRIMARY KEY, text TEXT NOT NULL, vectors BLOB NOT NULL)`);
    db.prepare(`INSERT INTO leak (text, vectors) VALUES (?, ?)`).run(atom.text, blob);
    db.exec(`DELETE FROM leak`);
  } finally {
    db.close();
  }
  const file = { path, bytes: readFileSync(path) };
  const problems = [];
  const secrets = new Set(secretHits([file], detector.secret).map((hit) => hit.what));
  if (!secrets.has("canary") || !secrets.has("code")) problems.push(`secrets found: ${[...secrets]}`);
  const runs = unitFloatRuns(file.bytes, DIMENSIONS);
  if (runs.length < 2) problems.push(`${runs.length} unit-norm runs of 3 copies`);
  const where = (data) => locate([file], new Uint8Array(data.buffer), dirname(path));
  if (!where(vector) || !where(quantize(vector))) problems.push("exact pieces not found");
  const recovered = detector.inverter.rawWindowRecoveries(file.bytes, [detector.targets[0]], rawOptions);
  const as = new Set(recovered.map((hit) => hit.as));
  if (!as.has("int8") || !as.has("float32")) problems.push(`raw-window recoveries: ${[...as]}`);
  if (problems.length) throw new Error(problems.join("; "));
  return `deleted row in freed pages of a ${file.bytes.length}-byte file: canary, code, ${runs.length} float32 runs, exact pieces, ${recovered.length} raw-window recoveries`;
}

/** The tenant object's wrapped keys and sealed blobs, read from a copy of its SQLite file. */
export function readTenantBlobs(dir, tenant, work) {
  const { DatabaseSync } = loadSqlite();
  const doRoot = join(dir, "v3", "do");
  const classDirs = existsSync(doRoot) ? readdirSync(doRoot).filter((name) => name.includes("TenantServer")) : [];
  const scratch = join(work, "sqlite-copy");
  for (const classDir of classDirs) {
    for (const name of readdirSync(join(doRoot, classDir)).filter((n) => n.endsWith(".sqlite"))) {
      rmSync(scratch, { recursive: true, force: true });
      mkdirSync(scratch);
      for (const suffix of ["", "-wal", "-shm"]) {
        const from = join(doRoot, classDir, `${name}${suffix}`);
        if (existsSync(from)) copyFileSync(from, join(scratch, `db.sqlite${suffix}`));
      }
      const db = new DatabaseSync(join(scratch, "db.sqlite"), { readOnly: true });
      try {
        const bound = db.prepare(`SELECT value FROM tenant_meta WHERE key = 'tenant'`).get()?.value;
        if (bound !== tenant) continue;
        const blobs = (sql) =>
          db
            .prepare(sql)
            .all()
            .map((row) => new Uint8Array(row.blob));
        return {
          state: db.prepare(`SELECT value FROM tenant_meta WHERE key = 'state'`).get()?.value ?? "active",
          meta: db
            .prepare(`SELECT key FROM tenant_meta ORDER BY key`)
            .all()
            .map((row) => row.key),
          file: relative(dir, join(doRoot, classDir, name)),
          // Every wrapped key the object holds, whatever its table (data keys, and any other key wrapped the same way).
          wrappedKeys: tablesWith(db, "wrapped").flatMap((table) => blobs(`SELECT wrapped AS blob FROM "${table}"`)),
          pages: blobs(`SELECT sealed AS blob FROM vector_pages`),
          rows: blobs(`SELECT sealed AS blob FROM vector_rows`),
          atoms: blobs(`SELECT sealed AS blob FROM atoms`),
        };
      } finally {
        db.close();
      }
    }
  }
  throw new Error(`no SQLite file of a TenantServer object bound to ${tenant} under ${relative(work, doRoot)}`);
}

/** Tables of `db` that have a column named `column`. */
function tablesWith(db, column) {
  return db
    .prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`)
    .all()
    .map((row) => row.name)
    .filter((table) =>
      db
        .prepare(`SELECT name FROM pragma_table_info(?)`)
        .all(table)
        .some((info) => info.name === column),
    );
}

let sqlite = null;
function loadSqlite() {
  return sqlite;
}

/** node:sqlite prints an ExperimentalWarning on Node 22; the e2e output stays quiet. */
export async function preloadSqlite() {
  const listeners = process.listeners("warning");
  process.removeAllListeners("warning");
  process.on("warning", (warning) => {
    if (warning.name !== "ExperimentalWarning") for (const listener of listeners) listener(warning);
  });
  sqlite = await import("node:sqlite");
}
