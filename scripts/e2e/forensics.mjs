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
// of the atoms, then on a real SQLite file where such an atom was written and deleted: they must find it, which
// shows the scan can fail. FORENSICS_KEEP=1 keeps the folders for a look.
import { randomBytes } from "node:crypto";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mintDevToken } from "../token.mjs";
import {
  atomsFor,
  atomWords,
  decoyCodes,
  dictionaryFrom,
  documentText,
  freshSecrets,
  randomSecret,
  sleep,
} from "./forensic-data.mjs";
import {
  BLOB_KINDS,
  foundIn,
  GROUP,
  locate,
  positiveControl,
  preloadSqlite,
  readTenantBlobs,
  scanChecks,
  sqliteControl,
} from "./forensic-files.mjs";
import { pollUntil, rawHttp, rawRpc, withMcpClient } from "./forensic-http.mjs";
import { Inverter, walkFiles } from "./forensic-scan.mjs";
import { DevServer } from "./forensic-server.mjs";
import { DIMENSIONS } from "./public-embedder.mjs";

const HEALTHY_TIMEOUT_MS = 120_000;
const TOMBSTONE_KEYS = "registered schema_version shred_receipt state tenant";

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
    // FORENSICS_KEEP=1 keeps the folders (state, restored copy) for a look at what was scanned.
    if (process.env.FORENSICS_KEEP === "1") console.log(`forensics: kept ${work}`);
    else rmSync(work, { recursive: true, force: true });
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
  const inSqlite = await report.check(
    GROUP,
    "positive control: a deleted plaintext atom is found in a SQLite file",
    () => sqliteControl(detector, work),
  );
  if (!inSqlite) return;

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
      // The tenant's own file now holds the tombstone only (docs/crypto.md "What remains after a shred").
      const tombstone = readTenantBlobs(dir, tenant, work);
      const rows = BLOB_KINDS.filter((kind) => tombstone[kind].length > 0);
      if (rows.length) throw new Error(`the tenant's file still has rows: ${rows.join(", ")}`);
      if (tombstone.meta.join(" ") !== TOMBSTONE_KEYS) throw new Error(`tenant_meta holds ${tombstone.meta.join(" ")}`);
      return `${sealed.wrappedKeys.length + sealed.pages.length + sealed.rows.length + sealed.atoms.length} blobs searched in ${files.length} files; the tenant's file holds the tombstone only (${TOMBSTONE_KEYS})`;
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
