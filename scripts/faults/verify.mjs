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

/** Compares expected id -> text with what the server returns; problems as short strings. */
export async function checkTexts(client, expected) {
  const texts = await readTexts(client, [...expected.keys()]);
  const problems = [];
  let missing = 0;
  let wrong = 0;
  for (const [id, text] of expected) {
    const got = texts.get(id);
    if (typeof got === "object") {
      missing++;
      if (problems.length < 5) problems.push(`${id}: ${got.error}`);
    } else if (got !== text) {
      wrong++;
      if (problems.length < 5) problems.push(`${id}: text differs`);
    }
  }
  return { problems, missing, wrong };
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
