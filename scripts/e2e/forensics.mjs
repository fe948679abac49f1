// Forensics over the real files (issue 10; docs/crypto.md "What someone with a storage copy can read"). An attacker
// holding a copy of the `wrangler dev --persist-to` folder — live SQLite files with their -wal/-shm and freed pages,
// R2 blobs, the local trace store, everything — must find no canary word, no code, no vector and no way to invert
// one, before and after a shred; a copy taken before the shred must open nothing once the master epoch it was
// wrapped under is gone; and the tombstone keeps refusing the tenant after a restart.
//
// Flow (each step one check; a failed step skips what depends on it):
//   1. wrangler dev on a fresh folder DIR (epoch f1); a real MCP client stores atoms holding a fresh canary word and
//      a fresh 6-digit code, two documents and an ingest of one of them; a second tenant stores a control atom.
//   2. Stop (SIGINT to wrangler, then make sure no process of its group is left) and scan every file under DIR;
//      read the tenant's wrapped keys and sealed blobs from a read-only copy of its SQLite file; copy DIR.
//   3. Restart, offboard the tenant, wait for the receipt (storage dropped), stop, scan DIR again.
//   4. Restart with a new epoch f2 (both secrets), rewrap-master; restart with f2 only: the tombstone refuses the
//      tenant on every route, the control tenant still opens.
//   5. Start on the copy with f2 only: nothing of the tenant opens (ERR_KEY_UNAVAILABLE), no canary in any answer.
// The detectors (scripts/e2e/forensic-scan.mjs) first run on a synthetic buffer holding a plaintext vector of one
// of the atoms: they must find it, which shows the scan can fail.
import { randomBytes, randomInt } from "node:crypto";
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { mintDevToken } from "../token.mjs";
import { pollUntil, rawHttp, rawRpc, withMcpClient } from "./forensic-http.mjs";
import { chunksOf, findAll, Inverter, needleForms, unitFloatRuns, walkFiles } from "./forensic-scan.mjs";
import { freePort } from "./ports.mjs";
import { DIMENSIONS, publicEmbed, quantize, words } from "./public-embedder.mjs";
import { startWranglerDev, waitForHealthy } from "./wrangler.mjs";

const GROUP = "forensics";
const HEALTHY_TIMEOUT_MS = 120_000;
const TOP_K = 12;
const CODE_DECOYS = 9_999;
const BLOB_KINDS = ["wrappedKeys", "pages", "rows", "atoms"];

/** keysDir: the run's dev issuer (its public JWKS is `jwks`); logFile: where wrangler's output goes. */
export async function forensicsChecks({ root, report, logFile, jwks, keysDir }) {
  await preloadSqlite();
  const work = mkdtempSync(join(tmpdir(), "tenant-mcp-forensics-"));
  const server = new DevServer({ root, work, logFile, jwks });
  await server.init();
  const mint = (tenant, sub) =>
    mintDevToken({ tenant, sub, scope: "mcp kb.read kb.write", ttl: 1800, aud: server.resource, keysDir });
  const adminToken = () =>
    mintDevToken({ admin: true, sub: "forensics-operator", ttl: 600, aud: `${server.base}/admin`, keysDir });
  try {
    await flow({ root, report, work, server, mint, adminToken });
  } finally {
    await server.stop().catch(() => {});
    rmSync(work, { recursive: true, force: true });
  }
}

async function flow({ root, report, work, server, mint, adminToken }) {
  const dir = join(work, "persist");
  const copy = join(work, "restored");
  const secrets = { f1: randomSecret(), f2: randomSecret() };
  const tenant = `fx-${randomBytes(4).toString("hex")}`;
  const control = `${tenant}-ctl`;
  const secret = freshSecrets();
  const dictionary = dictionaryFrom(root);
  const atoms = atomsFor(secret, dictionary);
  const inverter = new Inverter([...dictionary, secret.canary], DIMENSIONS);
  const codes = new Inverter([secret.code, ...decoyCodes(secret.code)], DIMENSIONS);
  const targets = atoms.map((atom) => ({ name: atom.id, words: atomWords(atom) }));
  const detector = { inverter, codes, targets, secret, atoms };
  const epoch = (current, ...live) => ({
    MASTER_KEY_EPOCH: current,
    ...Object.fromEntries(live.map((name) => [`MASTER_KEY_${name.toUpperCase()}`, secrets[name]])),
  });

  const controlled = await report.check(GROUP, "positive control: the detectors find a planted plaintext vector", () =>
    positiveControl(detector),
  );
  if (!controlled) return;

  const stored = await report.check(
    GROUP,
    "store atoms (canary word, 6-digit code), documents and an ingest through a real MCP client",
    async () => {
      await server.start(dir, epoch("f1", "f1"));
      const detail = await storeTenantData(server, await mint(tenant, "alice"), atoms, secret);
      await withMcpClient(server.resource, await mint(control, "carol"), ({ call }) =>
        call("add_atoms", { atoms: [{ id: "ctl-1", text: "control atom about orchards and harbour granite" }] }),
      );
      await sleep(2000); // let the alarms run (blob GC, run clean-up) before the files are read
      await server.stop();
      return detail;
    },
    { timeoutMs: HEALTHY_TIMEOUT_MS + 90_000 },
  );
  if (!stored) return;

  const before = await scanChecks(report, "before the shred", dir, detector);
  let sealed = null;
  await report.check(GROUP, "the tenant's sealed blobs are in the files (the scan reads real bytes)", () => {
    const blobs = readTenantBlobs(dir, tenant, work);
    if (blobs.wrappedKeys.length === 0 || blobs.pages.length === 0)
      throw new Error("no wrapped key or vector page row");
    const missing = BLOB_KINDS.filter((kind) => !blobs[kind].every((blob) => foundIn(before.files, blob)));
    if (missing.length) throw new Error(`not found in any file: ${missing.join(", ")}`);
    cpSync(dir, copy, { recursive: true });
    const copied = readTenantBlobs(copy, tenant, work);
    if (copied.state !== "active") throw new Error(`the copy's tenant state is ${copied.state}`);
    sealed = blobs;
    return `${blobs.file}: ${blobs.wrappedKeys.length} wrapped key(s), ${blobs.pages.length} page(s), ${blobs.rows.length} exact row(s), ${blobs.atoms.length} sealed atom(s), all found by the scan; folder copied`;
  });
  if (!sealed) return;

  const shredded = await report.check(
    GROUP,
    "offboard through the admin API; the purge receipt completes",
    async () => {
      await server.start(dir, epoch("f1", "f1"));
      const admin = server.admin(await adminToken());
      const answer = await admin("POST", `/tenants/${tenant}/offboard`, { confirm: tenant });
      if (answer.status !== 202) throw new Error(`offboard: HTTP ${answer.status} ${answer.text.slice(0, 200)}`);
      const status = await pollUntil(
        () => admin("GET", `/tenants/${tenant}`),
        (got) => Boolean(got.body?.receipt?.completedAt && got.body.receipt.storageDroppedAt),
      );
      const receipt = status.body?.receipt;
      if (!receipt?.storageDroppedAt) throw new Error(`receipt not completed: ${status.text.slice(0, 300)}`);
      await server.stop();
      return `purged ${JSON.stringify(receipt.purged)}, storage dropped`;
    },
    { timeoutMs: HEALTHY_TIMEOUT_MS + 90_000 },
  );
  if (!shredded) return;

  await scanChecks(report, "after the shred", dir, detector);
  await report.check(
    GROUP,
    "after the shred: no file holds a wrapped key, a vector page, an exact row or an atom",
    () => {
      const files = walkFiles(dir);
      const left = [];
      for (const kind of BLOB_KINDS) {
        for (const blob of sealed[kind]) {
          const where = locate(files, blob, dir);
          if (where) left.push(`${kind} at ${where}`);
        }
      }
      if (left.length) throw new Error(left.slice(0, 5).join("; "));
      return `${sealed.wrappedKeys.length + sealed.pages.length + sealed.rows.length + sealed.atoms.length} blobs searched in ${files.length} files`;
    },
  );

  const rewrapped = await report.check(
    GROUP,
    "master epoch rotation: rewrap under f2, then the old secret is removed",
    async () => {
      await server.start(dir, epoch("f2", "f1", "f2"));
      const admin = server.admin(await adminToken());
      const started = await admin("POST", "/master/rewrap");
      if (started.status !== 202) throw new Error(`rewrap: HTTP ${started.status} ${started.text.slice(0, 200)}`);
      const done = await pollUntil(
        () => admin("GET", "/master"),
        (got) => Boolean(got.body?.job?.completedAt),
      );
      const job = done.body?.job;
      if (!job?.completedAt) throw new Error(`rewrap not completed: ${done.text.slice(0, 300)}`);
      if ((job.failures ?? []).length > 0 || job.failed > 0)
        throw new Error(`rewrap failures: ${done.text.slice(0, 300)}`);
      await server.stop();
      return `job ${JSON.stringify(job).slice(0, 160)}`;
    },
    { timeoutMs: HEALTHY_TIMEOUT_MS + 90_000 },
  );
  if (!rewrapped) return;

  await report.check(
    GROUP,
    "restart with only the new secret: the tombstone refuses the tenant on every route; the control tenant opens",
    async () => {
      await server.start(dir, epoch("f2", "f2"));
      const detail = await tombstoneRefuses(server, await mint(tenant, "alice"), tenant, adminToken, secret);
      const found = await withMcpClient(server.resource, await mint(control, "carol"), ({ call }) =>
        call("search", { query: "orchards harbour", top_k: 1 }),
      );
      if (found.results?.[0]?.id !== "ctl-1") throw new Error(`control tenant: ${JSON.stringify(found).slice(0, 200)}`);
      await server.stop();
      return `${detail}; control tenant searched under f2 only`;
    },
    { timeoutMs: HEALTHY_TIMEOUT_MS + 60_000 },
  );

  await report.check(
    GROUP,
    "a copy restored from before the shred, started with only the new secret: nothing of the tenant opens",
    async () => {
      await server.start(copy, epoch("f2", "f2"));
      const detail = await restoredCopyFailsClosed(
        server,
        await mint(tenant, "alice"),
        tenant,
        adminToken,
        secret,
        atoms,
      );
      await server.stop();
      return detail;
    },
    { timeoutMs: HEALTHY_TIMEOUT_MS + 60_000 },
  );

  report.skip(
    GROUP,
    "cross-tenant: A's sealed vector page in B's rows fails to open",
    "covered by test/kb/sealed-vector-pages.test.ts (“a page of tenant A placed into tenant B's rows fails to open”)",
  );
}

// ---- step bodies ----

async function storeTenantData(server, token, atoms, secret) {
  const docText = documentText(secret);
  const counts = await withMcpClient(server.resource, token, async ({ call }) => {
    await call("add_atoms", { atoms });
    await call("put_document", { id: "fx-doc-1", text: docText });
    const ingest = await call("ingest_document", { document_id: "fx-doc-1", wait: true });
    const hits = await call("search", { query: `${secret.canary} ${secret.code}`, top_k: 5 });
    if (!hits.results?.some((hit) => hit.id === atoms[0].id)) {
      throw new Error(`search for the canary missed the atom: ${JSON.stringify(hits).slice(0, 200)}`);
    }
    await call("get_atom", { id: atoms[0].id });
    return { ingest: ingest.status ?? "?", hits: hits.results.length };
  });
  const put = await rawHttp(`${server.base}/v1/documents/fx-doc-2`, token, {
    method: "PUT",
    body: docText,
    contentType: "text/plain; charset=utf-8",
  });
  if (put.status !== 201) throw new Error(`PUT /v1/documents: HTTP ${put.status} ${put.text.slice(0, 200)}`);
  const got = await rawHttp(`${server.base}/v1/documents/fx-doc-2`, token);
  if (got.text !== docText) throw new Error("GET /v1/documents did not return the document");
  return `${atoms.length} atoms, 2 documents, ingest ${counts.ingest}, search found the canary atom`;
}

async function tombstoneRefuses(server, token, tenant, adminToken, secret) {
  const refusals = await tenantRequests(server, token);
  const wrong = refusals.filter((r) => r.status !== 403 || !r.text.includes("ERR_TENANT_OFFBOARDED"));
  if (wrong.length) {
    throw new Error(wrong.map((r) => `${r.name}: HTTP ${r.status} ${r.text.slice(0, 120)}`).join("; "));
  }
  leakFree(refusals, secret);
  const admin = server.admin(await adminToken());
  const status = await admin("GET", `/tenants/${tenant}`);
  const body = status.body ?? {};
  if (status.status !== 200 || body.state !== "offboarded" || (body.keys ?? []).length !== 0 || body.atoms !== 0) {
    throw new Error(`admin status: HTTP ${status.status} ${status.text.slice(0, 200)}`);
  }
  const writes = [
    ["rotate", await admin("POST", `/tenants/${tenant}/rotate`)],
    ["egress", await admin("PUT", `/tenants/${tenant}/egress`, { origins: [], resources: [] })],
    ["revoke", await admin("POST", `/tenants/${tenant}/revocations`, { jti: "forensics-probe" })],
  ].filter(([, got]) => got.status !== 403 || !got.text.includes("ERR_TENANT_OFFBOARDED"));
  if (writes.length) throw new Error(writes.map(([name, got]) => `admin ${name}: HTTP ${got.status}`).join("; "));
  return `${refusals.length} tenant routes 403 ERR_TENANT_OFFBOARDED; admin status offboarded (no keys, 0 atoms); admin rotate/egress/revoke 403`;
}

async function restoredCopyFailsClosed(server, token, tenant, adminToken, secret, atoms) {
  // Deleting a document needs no key (the row and the R2 object go), so the copy allows it; every other request
  // needs the tenant's data key and must fail with the documented error.
  const all = await tenantRequests(server, token, atoms[0].id);
  const deletes = all.filter((r) => r.name.startsWith("DELETE"));
  const answers = all.filter((r) => !r.name.startsWith("DELETE"));
  const opened = answers.filter((r) => !r.text.includes("ERR_KEY_UNAVAILABLE"));
  if (opened.length)
    throw new Error(opened.map((r) => `${r.name}: HTTP ${r.status} ${r.text.slice(0, 160)}`).join("; "));
  leakFree(all, secret);
  // The copy does hold the tenant (so the refusals are the missing epoch, not an empty copy).
  const admin = server.admin(await adminToken());
  const status = await admin("GET", `/tenants/${tenant}`);
  const body = status.body ?? {};
  const epochs = (body.keys ?? []).map((key) => key.epoch);
  if (body.state !== "active" || !(body.atoms >= atoms.length) || !epochs.includes("f1")) {
    throw new Error(`the copy does not hold the tenant: ${status.text.slice(0, 200)}`);
  }
  leakFree([{ name: "admin status", ...status }], secret);
  return `${answers.length} requests ERR_KEY_UNAVAILABLE (DELETE of a document, keyless: HTTP ${deletes.map((r) => r.status)}), no canary or code in any answer; the copy holds ${body.atoms} atoms under epoch f1`;
}

/** Every route a tenant token reaches, as raw requests: [{name, status, text}]. */
async function tenantRequests(server, token, atomId = "fx-1") {
  const url = server.resource;
  const tool = (name, args) => rawRpc(url, token, "tools/call", { name, arguments: args });
  const list = [
    ["tools/call search", () => tool("search", { query: "ledger", top_k: 3 })],
    ["tools/call get_atom", () => tool("get_atom", { id: atomId })],
    ["tools/call list_atoms", () => tool("list_atoms", {})],
    ["tools/call add_atoms", () => tool("add_atoms", { atoms: [{ text: "new" }] })],
    ["tools/call get_document", () => tool("get_document", { id: "fx-doc-1" })],
    ["resources/read", () => rawRpc(url, token, "resources/read", { uri: `atom://${atomId}` })],
    ["initialize (2025-11-25)", () => legacyInitialize(url, token)],
    ["GET /v1/documents", () => rawHttp(`${server.base}/v1/documents/fx-doc-2`, token)],
    [
      "PUT /v1/documents",
      () =>
        rawHttp(`${server.base}/v1/documents/fx-doc-3`, token, { method: "PUT", body: "x", contentType: "text/plain" }),
    ],
    ["DELETE /v1/documents", () => rawHttp(`${server.base}/v1/documents/fx-doc-2`, token, { method: "DELETE" })],
  ];
  const out = [];
  for (const [name, send] of list) out.push({ name, ...(await send()) });
  return out;
}

function legacyInitialize(url, token) {
  const body = JSON.stringify({
    jsonrpc: "2.0",
    id: 1,
    method: "initialize",
    params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "e2e-forensics", version: "1" } },
  });
  return rawHttp(url, token, { method: "POST", body, accept: "application/json, text/event-stream" });
}

function leakFree(answers, secret) {
  for (const answer of answers) {
    for (const value of [secret.canary, secret.code]) {
      if (answer.text.includes(value)) throw new Error(`${answer.name}: the answer holds a secret of the tenant`);
    }
  }
}

// ---- the scan ----

async function scanChecks(report, when, dir, detector) {
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
// (see Inverter.rawWindowRecoveries: a plaintext vector of an atom scores about 15, random bytes stay below 6).
const rawOptions = { k: TOP_K, minZ: 8 };
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
function locate(files, blob, dir) {
  const pieces = blob.byteLength <= 64 ? [{ at: 0, bytes: Buffer.from(blob) }] : chunksOf(blob, 32);
  for (const file of files) {
    for (const piece of pieces) {
      const at = file.bytes.indexOf(piece.bytes);
      if (at >= 0) return `${relative(dir, file.path)}@${at}`;
    }
  }
  return null;
}

function foundIn(files, blob) {
  const head = Buffer.from(blob.subarray(0, Math.min(32, blob.byteLength)));
  return files.some((file) => file.bytes.indexOf(head) >= 0);
}

function floatWindow(bytes, offset) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: DIMENSIONS }, (_, d) => view.getFloat32(offset + d * 4, true));
}

/** The detectors on a synthetic buffer: random bytes with a plaintext vector, its int8 copy and the secrets. */
function positiveControl(detector) {
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
  // A window starting a value early or late overlaps 383 of the 384 values and may be the one reported.
  const runs = unitFloatRuns(buffer, DIMENSIONS).map((run) => run.offset);
  const near = (offset) => runs.some((at) => Math.abs(at - offset) <= 4);
  if (!near(1001) || !near(80_000)) problems.push(`unit runs at ${runs}`);
  const target = detector.targets[0];
  const top = detector.inverter.rank(floatWindow(buffer, 1001), TOP_K).filter((word) => target.words.includes(word));
  if (top.length < RANKED_WORDS_MIN) problems.push(`ranking recovered ${top.length} words`);
  const found = detector.inverter.rawWindowRecoveries(buffer, [target], rawOptions);
  const raw = found.map((hit) => `${hit.as}@${hit.offset}`);
  if (!raw.includes("int8@40003") || !raw.includes("float32@1001")) problems.push(`raw windows: ${raw}`);
  const nothing = detector.inverter.rawWindowRecoveries(randomBytes(64 * 1024), [target], rawOptions);
  if (nothing.length) problems.push("random bytes gave a recovery");
  if (problems.length) throw new Error(problems.join("; "));
  const z = found.map((hit) => hit.z).join("/");
  return `canary (UTF-16), code, 2 float32 runs (1 cut), ${top.length}/${target.words.length} words in the top ${TOP_K}, raw int8 and float32 windows recovered (z ${z}); none from random bytes`;
}

// ---- storage reading (node:sqlite, read-only, on a copy) ----

/** The tenant object's wrapped keys and sealed blobs, read from a copy of its SQLite file. */
function readTenantBlobs(dir, tenant, work) {
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
          file: relative(dir, join(doRoot, classDir, name)),
          wrappedKeys: blobs(`SELECT wrapped AS blob FROM tenant_keys`),
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

// ---- test data ----

function freshSecrets() {
  const letters = Array.from({ length: 10 }, () => String.fromCharCode(97 + randomInt(26))).join("");
  return { canary: `zq${letters}`, code: String(randomInt(100_000, 1_000_000)) };
}

/** The attacker's dictionary: the distinct words of the project's docs (plain English and project terms). */
function dictionaryFrom(root) {
  const text = ["README.md", ...readdirSync(join(root, "docs")).map((name) => join("docs", name))]
    .filter((name) => name.endsWith(".md"))
    .map((name) => readFileSync(join(root, name), "utf8"))
    .join("\n");
  return [...new Set(words(text).filter((word) => /^[a-z]{3,16}$/.test(word)))].sort();
}

function atomsFor(secret, dictionary) {
  const pick = () => dictionary[randomInt(dictionary.length)];
  return [1, 2, 3].map((n) => {
    const w = Array.from({ length: 9 }, pick);
    return {
      id: `fx-${n}`,
      title: `${w[0]} ${secret.canary}`,
      text: `The ${secret.canary} ${w[1]} ${w[2]} lists code ${secret.code} beside the ${w[3]} ${w[4]} and ${w[5]} ${w[6]} ${w[7]} ${w[8]}.`,
      tags: [secret.canary, w[0]],
      source: `${secret.canary}-notes`,
    };
  });
}

function documentText(secret) {
  return [
    `# Field notes ${secret.canary}`,
    "",
    `The ${secret.canary} survey recorded code ${secret.code} at the northern gate.`,
    "",
    `A second paragraph repeats ${secret.canary} and ${secret.code} so that extraction makes atoms of it.`,
    "",
  ].join("\n");
}

function embeddingText(atom) {
  return atom.title ? `${atom.title}\n${atom.text}` : atom.text;
}

function atomWords(atom) {
  return [...new Set(words(embeddingText(atom)).filter((word) => !/^\d+$/.test(word)))];
}

function decoyCodes(code) {
  const out = new Set();
  while (out.size < CODE_DECOYS) {
    const candidate = String(randomInt(100_000, 1_000_000));
    if (candidate !== code) out.add(candidate);
  }
  return [...out];
}

function randomSecret() {
  return randomBytes(32).toString("base64");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- the server ----

/** One wrangler dev at a time, on a folder chosen per start; stopped gracefully and then for sure. */
class DevServer {
  #handle = null;

  constructor({ root, work, logFile, jwks }) {
    this.options = { root, work, logFile, jwks };
  }

  /** One port for every start: tokens carry its URL as audience. */
  async init() {
    this.port = await freePort();
    this.base = `http://127.0.0.1:${this.port}`;
    this.resource = `${this.base}/mcp`;
  }

  async start(persistTo, epochVars) {
    await this.stop(); // a check that failed half-way may have left the previous one running
    const inspectorPort = await freePort([this.port]);
    this.#handle = startWranglerDev({
      root: this.options.root,
      workDir: this.options.work,
      port: this.port,
      inspectorPort,
      logFile: this.options.logFile,
      persistTo,
      vars: {
        MCP_RESOURCE: this.resource,
        ALLOWED_HOSTS: "127.0.0.1,localhost",
        ALLOWED_ORIGINS: this.base,
        AUTH_JWKS: this.options.jwks,
        ...epochVars,
      },
    });
    await waitForHealthy(this.base, this.#handle, HEALTHY_TIMEOUT_MS);
  }

  /** SIGINT to wrangler (it stops workerd), bounded waits, then the group is signalled until none of it is left. */
  async stop() {
    const handle = this.#handle;
    this.#handle = null;
    if (!handle) return;
    signal(handle.pid, "SIGINT", false);
    await Promise.race([handle.exited, sleep(15_000)]);
    for (let i = 0; i < 50 && groupAlive(handle.pid); i++) await sleep(100);
    await handle.stop(); // SIGTERM, then SIGKILL, to whatever of the group is left; deregisters it
    for (let i = 0; i < 100 && groupAlive(handle.pid); i++) {
      signal(handle.pid, "SIGKILL", true);
      await sleep(100);
    }
    if (groupAlive(handle.pid)) throw new Error(`process group ${handle.pid} still alive`);
  }

  admin(token) {
    return async (method, path, body) => {
      const got = await rawHttp(`${this.base}/admin${path}`, token, {
        method,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      let parsed = null;
      try {
        parsed = JSON.parse(got.text);
      } catch {
        // not JSON: the text is reported
      }
      return { ...got, body: parsed };
    };
  }
}

function signal(pid, name, group) {
  try {
    process.kill(group ? -pid : pid, name);
  } catch {
    // ESRCH: already gone
  }
}

function groupAlive(pid) {
  try {
    process.kill(-pid, 0);
    return true;
  } catch (error) {
    return error.code === "EPERM";
  }
}
