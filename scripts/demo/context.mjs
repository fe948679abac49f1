// What every step shares: the callers (A, A's second subject, B, the control tenant), the admin API, the story's
// data, and the check that A's data is intact after an attack (A reads its own atoms back and its count is what
// A last wrote).
import { leaks } from "./cells.mjs";
import { Caller } from "./mcp.mjs";

export function createContext({ mode, base, identities, story, matrix, local = null }) {
  const mcpUrl = `${base}/mcp`;
  const caller = (identity) => (identity ? new Caller(mcpUrl, identity) : null);
  const ctx = {
    mode,
    base,
    mcpUrl,
    story,
    matrix,
    local,
    tenants: identities.tenants,
    a: caller(identities.a),
    a2: caller(identities.a2),
    b: caller(identities.b),
    control: caller(identities.control),
    adminToken: identities.admin,
    state: { aAtoms: null },
    versions: {},
    /** Lines for the report's header: what was skipped or substituted, and why. */
    notes: [],
  };

  ctx.admin = async (method, path, body) => {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${ctx.adminToken}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: response.status, text, json };
  };

  /** A's own view after an attack: its secret reads back whole, and its atom count is what A last wrote. */
  ctx.checkA = async () => {
    const secret = await ctx.a.call("modern", "get_atom", { id: "a-secret" });
    const stats = await ctx.a.call("modern", "kb_stats", {});
    const atoms = stats.result?.structuredContent?.atoms;
    const whole = !secret.refused && secret.result.structuredContent?.atom?.text === story.aAtoms[0].text;
    const ok = whole && atoms === ctx.state.aAtoms;
    return {
      ok,
      detail: `A: secret ${whole ? "intact" : "NOT intact"}, ${atoms} atom(s) (expected ${ctx.state.aAtoms})`,
    };
  };

  /** Records A's atom count as the baseline, after A's own writes. */
  ctx.rebaseline = async () => {
    ctx.state.aAtoms = (await ctx.a.ok("modern", "kb_stats", {})).atoms;
  };

  /**
   * Runs a list of attacks; each returns {text, ok, note}. The cell passes if every attack answered as expected,
   * none of A's canaries is in any answer, and A's data is intact afterwards.
   */
  ctx.attacks = async (channel, attack, expected, list, { intact = true } = {}) => {
    return matrix.cell(channel, attack, expected, async () => {
      const evidence = [];
      let asExpected = 0;
      let leaked = 0;
      for (const run of list) {
        const { text, ok, note } = await run();
        const found = leaks(text, story.needlesOfA);
        if (found.length) leaked++;
        if (ok && !found.length) asExpected++;
        evidence.push(
          `${ok && !found.length ? "ok  " : "FAIL"} ${note}${found.length ? ` — LEAK of ${found.join(", ")}` : ""}`,
        );
      }
      // After A's offboarding there is nothing of A left to be intact: the check is left out (and said so).
      const check = intact ? await ctx.checkA() : { ok: true, detail: "A offboarded: no intact check" };
      evidence.push(check.detail);
      const requests = list.length;
      return {
        ok: asExpected === requests && leaked === 0 && check.ok,
        observed: `${asExpected}/${requests} as expected, ${leaked} leak(s)${intact ? `, ${check.ok ? "A intact" : "A NOT intact"}` : ""}`,
        counts: { requests, asExpected, leaked, ...(intact ? { aIntact: check.ok } : {}) },
        evidence,
      };
    });
  };

  ctx.close = async () => {
    for (const who of [ctx.a, ctx.a2, ctx.b, ctx.control]) await who?.close();
  };
  return ctx;
}

/** A tool answer described for the evidence list. */
export function noteOf(who, era, label, answer) {
  const outcome = answer.refused ? `refused ${answer.code}` : "answered";
  return `${who} ${era} ${label}: ${outcome}`;
}

export const ERAS = ["modern", "legacy"];
