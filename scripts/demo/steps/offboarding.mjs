// Step 7, second half: A is offboarded (keys destroyed, every route refused, the purge completes with a receipt),
// then the master key epoch is rotated and the old epoch retired, and an attacker's copy of A's storage taken before
// the shred is put back: it must open nothing, neither served nor offline with the current master secret.
import { leaks } from "../cells.mjs";
import { ERAS } from "../context.mjs";
import { copyDatabase, open } from "../storage.mjs";

const POLL_MS = 300;
const PURGE_TIMEOUT_MS = 60_000;

export async function offboard(ctx, who, label, { probeCleanup = false } = {}) {
  const { matrix } = ctx;
  const tenant = who.tenant;
  const channel = probeCleanup ? "cleanup" : "keys";
  const sessionId = probeCleanup ? null : await who.sessionId();
  if (!probeCleanup) ctx.state.sessionBeforeShred = sessionId;
  const started = await ctx.admin("POST", `/admin/tenants/${tenant}/offboard`, { confirm: tenant });
  if (started.status !== 202) {
    matrix.add({
      channel,
      attack: `offboard ${label}`,
      expected: "202 with a receipt",
      verdict: "fail",
      observed: `HTTP ${started.status} ${started.text.slice(0, 200)}`,
    });
    return;
  }
  if (!probeCleanup) {
    const refusedNow = (answer) => answer.status >= 400 && answer.status !== 429 && answer.status < 500;
    await ctx.attacks(
      channel,
      "every route of offboarded A",
      "refused at once",
      [
        async () => {
          const answer = await who.raw({
            rpc: { method: "tools/call", params: { name: "get_atom", arguments: { id: "a-secret" } } },
          });
          return {
            text: answer.text,
            ok: refusedNow(answer),
            note: `A 2026-07-28 get_atom: HTTP ${answer.status} ${answer.text.slice(0, 120)}`,
          };
        },
        async () => {
          const answer = await who.raw({ rpc: { method: "tools/list" }, sessionId });
          return { text: answer.text, ok: refusedNow(answer), note: `A's 2025 session: HTTP ${answer.status}` };
        },
        async () => {
          const answer = await ctx.a2.raw({
            rpc: { method: "tools/call", params: { name: "search", arguments: { query: ctx.story.canary } } },
          });
          return { text: answer.text, ok: refusedNow(answer), note: `A2 search: HTTP ${answer.status}` };
        },
        async () => {
          const answer = await who.raw({ path: `/v1/documents/${ctx.story.injectedDocument.id}`, method: "GET" });
          return { text: answer.text, ok: refusedNow(answer), note: `A GET document: HTTP ${answer.status}` };
        },
        async () => {
          const body = new URLSearchParams({
            grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
            subject_token: who.token,
            subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
            resource: "https://docs.downstream.example/v1",
          });
          const answer = await who.raw({
            path: "/oauth/token",
            token: null,
            headers: { "content-type": "application/x-www-form-urlencoded" },
            body: body.toString(),
          });
          return {
            text: answer.text,
            ok: refusedNow(answer),
            note: `A token exchange: HTTP ${answer.status} ${answer.text.slice(0, 100)}`,
          };
        },
      ],
      { intact: false },
    );
  }
  await matrix.cell(
    channel,
    `offboard ${label}: keys destroyed, purge receipt`,
    "receipt completed, no key left",
    async () => {
      const deadline = Date.now() + PURGE_TIMEOUT_MS;
      let status = null;
      while (Date.now() < deadline) {
        const answer = await ctx.admin("GET", `/admin/tenants/${tenant}`);
        status = answer.json;
        if (status?.receipt?.completedAt) break;
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
      const receipt = status?.receipt ?? {};
      const ok =
        Boolean(receipt.completedAt) &&
        (receipt.keyVersionsDestroyed ?? []).length > 0 &&
        (status.keys ?? []).length === 0 &&
        status.state === "offboarded";
      return {
        ok,
        observed: `state ${status?.state}; ${(receipt.keyVersionsDestroyed ?? []).length} key version(s) destroyed, ${(status?.keys ?? []).length} left; purged ${JSON.stringify(receipt.purged ?? {})}; completed ${receipt.completedAt ?? "NOT within 60 s"}`,
        counts: { keysLeft: (status?.keys ?? []).length, ...(receipt.purged ?? {}) },
        evidence: [`receipt: ${JSON.stringify(receipt)}`],
      };
    },
  );
}

/** The server's variables with master key epoch d2 current and d1 still live (for the rewrap). */
export function rotatedVars(local) {
  return { ...local.server.vars, MASTER_KEY_EPOCH: "d2", MASTER_KEY_D2: local.epochs.d2 };
}

export async function rotationAfterShred(ctx, copy) {
  const { matrix, local, tenants } = ctx;
  const channel = "keys";
  // The server already runs with d2 current and d1 still live (started so by preShredCopy, one restart fewer).
  const rotated = local.server.vars;
  if (rotated.MASTER_KEY_EPOCH !== "d2") throw new Error("the server was not restarted on master key epoch d2");
  await matrix.cell(channel, "master key epoch rotation d1 → d2", "every live tenant rewrapped", async () => {
    const started = await ctx.admin("POST", "/admin/master/rewrap");
    const deadline = Date.now() + PURGE_TIMEOUT_MS;
    let job = started.json?.job ?? null;
    while (Date.now() < deadline && !job?.completedAt) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      job = (await ctx.admin("GET", "/admin/master")).json?.job ?? null;
    }
    return {
      ok: started.status === 202 && Boolean(job?.completedAt),
      observed: `rewrap to ${job?.epoch}: ${job?.completedAt ? "completed" : "NOT completed"}`,
      evidence: [JSON.stringify(job)],
    };
  });
  // Retire d1: its secret is gone from the server; restore the attacker's pre-shred copy of A in place of A's file.
  await local.server.stop();
  const { MASTER_KEY_D1: _retired, ...withoutD1 } = rotated;
  copyDatabase(copy.copy, copy.file);
  const db = open(copy.copy);
  const wrapped = db.prepare("SELECT tenant, version, epoch, wrapped FROM tenant_keys WHERE tenant = ?").all(tenants.a);
  db.close();
  await local.server.start(withoutD1);

  await matrix.cell(
    channel,
    "pre-shred copy of A after a master epoch rotation",
    "opens nothing, offline or served",
    async () => {
      const withCurrent = await Promise.all(wrapped.map((row) => unwrapOffline(row, "d2", local.epochs.d2)));
      const withRetired = await Promise.all(
        wrapped.map((row) => unwrapOffline(row, row.epoch, local.epochs[row.epoch])),
      );
      const served = [];
      for (const era of ERAS) {
        const answer = await ctx.a.raw({
          rpc: { method: "tools/call", params: { name: "get_atom", arguments: { id: "a-secret" } } },
          ...(era === "legacy" ? { sessionId: ctx.state.sessionBeforeShred } : {}),
        });
        served.push({
          era,
          status: answer.status,
          leaked: leaks(answer.text, ctx.story.needlesOfA).length,
          text: answer.text.slice(0, 140),
        });
      }
      const b = await ctx.b.call("modern", "get_atom", { id: "b-orchard" });
      const ok =
        wrapped.length > 0 &&
        withCurrent.every((result) => !result) &&
        withRetired.every(Boolean) &&
        served.every((answer) => answer.status >= 400 && answer.leaked === 0) &&
        !b.refused;
      return {
        ok,
        observed: `${wrapped.length} wrapped key(s) in the copy: ${withCurrent.filter(Boolean).length} open with the current master secret (d2); control: ${withRetired.filter(Boolean).length} would open with the retired d1 secret; served: ${served.map((s) => `HTTP ${s.status}`).join(", ")}, ${served.reduce((n, s) => n + s.leaked, 0)} leak(s); B still opens its data under d2: ${!b.refused}`,
        counts: {
          wrappedKeys: wrapped.length,
          openWithCurrent: withCurrent.filter(Boolean).length,
          leaked: served.reduce((n, s) => n + s.leaked, 0),
        },
        evidence: [
          ...served.map((s) => `A ${s.era} over the restored copy: HTTP ${s.status} ${s.text}`),
          "the legacy request presents A's real session id from before the shred (its row is in the restored copy)",
        ],
      };
    },
  );
}

/**
 * Unwraps a data key the way docs/crypto.md describes (HKDF-SHA-256 key-encryption key per epoch, AES-256-GCM with
 * tenant, version and epoch as associated data), independently of the server. Returns true if it opens.
 */
async function unwrapOffline(row, epoch, secretBase64) {
  if (!secretBase64) return false;
  try {
    const ikm = await crypto.subtle.importKey("raw", Buffer.from(secretBase64, "base64"), "HKDF", false, ["deriveKey"]);
    const kek = await crypto.subtle.deriveKey(
      {
        name: "HKDF",
        hash: "SHA-256",
        salt: new TextEncoder().encode("tenant-mcp-kb/master-kek/v1"),
        info: new TextEncoder().encode(epoch),
      },
      ikm,
      { name: "AES-GCM", length: 256 },
      false,
      ["decrypt"],
    );
    const bytes = new Uint8Array(row.wrapped);
    const aad = new TextEncoder().encode(`tenant-mcp-kb/data-key/v1\0${row.tenant}\0${row.version}\0${row.epoch}`);
    await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: bytes.subarray(0, 12), additionalData: aad },
      kek,
      bytes.subarray(12),
    );
    return true;
  } catch {
    return false;
  }
}
