// Scenario 4, offboarding purge under kills. Each round offboards a fresh tenant holding N known atoms and M
// documents, kills the server during the purge that the alarm drives, restarts and polls the status. Invariants:
// the receipt completes (bounded wait) and its counts are exact: purged.atoms == N, purged.documents == M,
// purged.vectors == N (local index: one vector per atom), and nothing of the tenant is left.
import { killDuring } from "../kill.mjs";
import { seedTenant } from "../seed.mjs";
import { pollUntil } from "../verify.mjs";

const GROUP = "4 offboarding purge";

export async function offboardingPurge(ctx) {
  const rng = ctx.rng.fork("offboard");
  for (let round = 1; round <= ctx.killPoints; round++) {
    const tenant = `f-off-${ctx.seed}-${round}`;
    const client = await ctx.tenantClient(tenant);
    const n = rng.int(400, 1200);
    const m = rng.int(20, 60);
    const delayMs = rng.int(0, 800);
    const started = Date.now();
    await seedTenant(ctx, client, rng, { atoms: n, documents: m });
    const answer = await ctx.admin("POST", `/tenants/${tenant}/offboard`, { confirm: tenant });
    if (answer.status !== 202) {
      ctx.report.verdict(GROUP, `kill ${round}: offboard accepted`, [
        `HTTP ${answer.status} ${JSON.stringify(answer.body).slice(0, 160)}`,
      ]);
      continue;
    }
    await killDuring(ctx, {
      scenario: "offboard",
      round,
      delayMs,
      workload: async () => {},
      note: { atoms: n, documents: m },
    });
    const polled = Date.now();
    const status = await pollUntil(
      async () => {
        const got = await ctx.admin("GET", `/tenants/${tenant}`);
        return got.status === 200 && got.body.receipt?.completedAt ? got.body : null;
      },
      { timeoutMs: ctx.full ? 120_000 : 40_000 },
    );
    const last = status ?? (await ctx.admin("GET", `/tenants/${tenant}`)).body;
    ctx.report.verdict(
      GROUP,
      `kill ${round} (${delayMs} ms): purge of ${n} atoms, ${m} documents completes`,
      status ? [] : [`receipt not completed after the bounded wait: ${JSON.stringify(last.receipt?.purged ?? last)}`],
      status
        ? `${((Date.now() - polled) / 1000).toFixed(1)} s after restart, ${last.receipt.purgeBatches} batches`
        : undefined,
      started,
    );
    const purged = last.receipt?.purged ?? {};
    const problems = [];
    if (purged.atoms !== n) problems.push(`purged.atoms ${purged.atoms}, expected ${n}`);
    if (purged.documents !== m) problems.push(`purged.documents ${purged.documents}, expected ${m}`);
    if (purged.vectors !== n) problems.push(`purged.vectors ${purged.vectors}, expected ${n}`);
    if (status && (last.atoms !== 0 || last.documents !== 0))
      problems.push(`left: ${last.atoms} atoms, ${last.documents} documents`);
    ctx.report.verdict(GROUP, `kill ${round}: receipt counts exact`, problems, JSON.stringify(purged));
  }
}
