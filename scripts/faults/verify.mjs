import { createHash } from "node:crypto";

// Reading a tenant's state back after a restart: every atom (paged list), texts by id, with bounded concurrency.

/** Runs `fn` over `items` with at most `limit` calls in flight; results in input order. */
export async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index], index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Every atom of the tenant in list order (ids may repeat if the server duplicated one: callers check). */
export async function listAll(client, maxPages = 2000) {
  const atoms = [];
  let cursor;
  for (let page = 0; page < maxPages; page++) {
    const answer = await client.call("list_atoms", { limit: 100, ...(cursor ? { cursor } : {}) });
    atoms.push(...answer.atoms);
    if (!answer.next_cursor) return atoms;
    cursor = answer.next_cursor;
  }
  throw new Error(`list_atoms did not end within ${maxPages} pages`);
}

/** get_atom for each id: Map id -> text, or -> {error} for an atom that could not be read. */
export async function readTexts(client, ids, concurrency = 6) {
  const texts = new Map();
  await pool(ids, concurrency, async (id) => {
    try {
      texts.set(id, (await client.call("get_atom", { id })).atom.text);
    } catch (error) {
      texts.set(id, { error: error.code ?? error.message });
    }
  });
  return texts;
}

export const sha256 = (text) => createHash("sha256").update(text, "utf8").digest("hex");

/**
 * Compares expected id -> text with the server's state; problems as short strings. Every atom is checked through
 * list_atoms, whose `contentHash` is SHA-256 of the text as decrypted for this read (src/kb/knowledge-base.ts
 * `#open`): equal hashes mean the sealed row opens and its text is byte-exact. get_atom then reads a sample of
 * them whole (the single-atom path), so verifying thousands of atoms stays a matter of seconds.
 */
export async function checkTexts(client, expected, { listed, sample = 60 } = {}) {
  const problems = [];
  let hashes;
  try {
    hashes = new Map((listed ?? (await listAll(client))).map((atom) => [atom.id, atom.contentHash]));
  } catch (error) {
    // An atom that cannot be opened fails its whole list page: fall back to reading every atom by id.
    problems.push(`list_atoms failed (${error.code ?? error.message.slice(0, 80)}); read each atom instead`);
    const texts = await readTexts(client, [...expected.keys()]);
    hashes = new Map([...texts].filter(([, text]) => typeof text === "string").map(([id, text]) => [id, sha256(text)]));
  }
  let missing = 0;
  let wrong = 0;
  const note = (text) => problems.length < 5 && problems.push(text);
  for (const [id, text] of expected) {
    if (!hashes.has(id)) {
      missing++;
      note(`${id}: not listed`);
    } else if (hashes.get(id) !== sha256(text)) {
      wrong++;
      note(`${id}: content hash differs`);
    }
  }
  const ids = [...expected.keys()];
  const step = Math.max(1, Math.floor(ids.length / sample));
  const sampled = ids.filter((_, i) => i % step === 0);
  const texts = await readTexts(client, sampled);
  for (const [id, got] of texts) {
    if (typeof got === "object") {
      missing++;
      note(`${id}: get_atom ${got.error}`);
    } else if (got !== expected.get(id)) {
      wrong++;
      note(`${id}: get_atom text differs`);
    }
  }
  return { problems, missing, wrong, sampled: sampled.length };
}

export function duplicates(ids) {
  const seen = new Set();
  const dup = new Set();
  for (const id of ids) (seen.has(id) ? dup : seen).add(id);
  return [...dup];
}

export function percentile(values, p) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** Polls `probe` until it returns a non-null value or the time is up (returns null then). */
export async function pollUntil(probe, { timeoutMs, intervalMs = 500 }) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe().catch(() => null);
    if (value !== null && value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  return null;
}
