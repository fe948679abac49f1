// Scenario 3, data-key rotation under kills. One tenant with a few hundred atoms and documents; each round starts
// a rotation, kills the server while the alarm job re-seals and re-encrypts, restarts, and polls the status.
// Invariants: the rotation completes (bounded wait), every older key version is destroyed (only the new version
// is listed), and every atom and document is readable and exact (never ERR_DECRYPT).
import { getDocument } from "../client.mjs";
import { killDuring } from "../kill.mjs";
import { seedTenant } from "../seed.mjs";
import { checkTexts, pollUntil, pool } from "../verify.mjs";

const GROUP = "3 key rotation";

export async function keyRotation(ctx) {
  const rng = ctx.rng.fork("rotation");
  const tenant = `f-rot-${ctx.seed}`;
  const client = await ctx.tenantClient(tenant);
  const started = Date.now();
  const expected = await seedTenant(ctx, client, rng, {
    atoms: ctx.full ? 400 : 300,
    documents: ctx.full ? 200 : rng.int(50, 80),
  });
  ctx.report.add({
    group: GROUP,
    name: "seeded",
    status: "passed",
    detail: `${expected.atoms.size} atoms, ${expected.documents.size} documents`,
    started,
  });

  for (let round = 1; round <= ctx.killPoints; round++) {
    const delayMs = rng.int(0, 1500);
    // The kill delay counts from the 202: the job then runs in the tenant object's alarm, not in the request.
    const answer = await ctx.admin("POST", `/tenants/${tenant}/rotate`);
    const rotation = answer.status === 202 ? answer.body.rotation : null;
    if (!rotation) {
      ctx.report.verdict(GROUP, `kill ${round}: rotate accepted`, [
        `HTTP ${answer.status} ${JSON.stringify(answer.body).slice(0, 160)}`,
      ]);
    }
    await killDuring(ctx, { scenario: "rotation", round, delayMs, workload: async () => {} });
    const polled = Date.now();
    const status = await pollUntil(
      async () => {
        const answer = await ctx.admin("GET", `/tenants/${tenant}`);
        return answer.status === 200 && answer.body.rotation?.completedAt ? answer.body : null;
      },
      { timeoutMs: ctx.full ? 120_000 : 40_000 },
    );
    const last = status ?? (await ctx.admin("GET", `/tenants/${tenant}`)).body;
    const target = rotation?.to ?? last.rotation?.to;
    ctx.report.verdict(
      GROUP,
      `kill ${round} (${delayMs} ms): rotation to v${target} completes`,
      status ? [] : [`not completed after the bounded wait: ${JSON.stringify(last.rotation)}`],
      status
        ? `${((Date.now() - polled) / 1000).toFixed(1)} s after restart; resealed ${last.rotation.resealedAtoms}, re-encrypted ${last.rotation.reencryptedDocuments}`
        : undefined,
      polled,
    );
    const versions = (last.keys ?? []).map((key) => key.version);
    ctx.report.verdict(
      GROUP,
      `kill ${round}: old key versions destroyed`,
      versions.length === 1 && versions[0] === target
        ? []
        : [`keys listed: [${versions.join(", ")}], expected [${target}]`],
      `keys [${versions.join(", ")}]`,
    );
    await checkAll(ctx, client, expected, `kill ${round}`);
  }
}

/** Every seeded atom (text) and document (bytes) readable and exact. */
export async function checkAll(ctx, client, expected, label) {
  const started = Date.now();
  const atoms = await checkTexts(client, expected.atoms);
  ctx.figures.acknowledgedChecked += expected.atoms.size + expected.documents.size;
  ctx.figures.lost += atoms.missing + atoms.wrong;
  ctx.report.verdict(
    GROUP,
    `${label}: every atom readable and exact`,
    atoms.problems.concat(atoms.missing + atoms.wrong ? [`${atoms.missing} unreadable, ${atoms.wrong} wrong`] : []),
    `${expected.atoms.size} atoms`,
    started,
  );
  const docStarted = Date.now();
  const problems = [];
  await pool([...expected.documents], 4, async ([id, bytes]) => {
    const got = await getDocument(ctx.base, client.token, id).catch((error) => ({ status: 0, text: error.message }));
    if (got.status !== 200) problems.push(`${id}: HTTP ${got.status} ${got.text.slice(0, 100)}`);
    else if (!bytes.equals(got.bytes)) problems.push(`${id}: body differs`);
  });
  ctx.figures.lost += problems.length;
  ctx.report.verdict(
    GROUP,
    `${label}: every document readable and exact`,
    problems.length ? [`${problems.length} unreadable or wrong`, ...problems] : [],
    `${expected.documents.size} documents`,
    docStarted,
  );
}
