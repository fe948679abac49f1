// Filling a tenant with known atoms and documents (the expected state that a job must preserve or purge).
import { putDocument } from "./client.mjs";
import { words } from "./rng.mjs";
import { pool } from "./verify.mjs";

export async function seedTenant(ctx, client, rng, { atoms, documents }) {
  const expectedAtoms = new Map();
  for (let i = 0; i < atoms; i++) expectedAtoms.set(`s-${i}`, `${words(rng, rng.int(3, 80))} #${i}`);
  const entries = [...expectedAtoms];
  const batches = [];
  for (let i = 0; i < entries.length; i += 100) batches.push(entries.slice(i, i + 100));
  await pool(batches, 3, (batch) =>
    client.call("add_atoms", { atoms: batch.map(([id, text]) => ({ id, text, tags: ["seeded"] })) }),
  );
  const expectedDocs = new Map();
  for (let i = 0; i < documents; i++) {
    expectedDocs.set(`sd-${i}`, Buffer.from(`sd-${i}\n${words(rng, rng.int(20, 2500))}\n`));
  }
  await pool([...expectedDocs], 4, ([id, bytes]) => putDocument(ctx.base, client.token, id, bytes));
  return { atoms: expectedAtoms, documents: expectedDocs };
}
