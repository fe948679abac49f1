// The demo's results: one cell per (channel, attack), each a real check with what was expected, what was observed,
// a verdict (pass, fail, skipped), counts taken from the answers, and the evidence behind it. Progress goes to
// stderr: a line rewritten in place on a terminal, plain lines otherwise (CI logs).

export class Matrix {
  cells = [];
  steps = [];
  started = Date.now();
  #step = null;
  #tty;
  #out;

  constructor(out = process.stderr) {
    this.#out = out;
    this.#tty = Boolean(out.isTTY) && !process.env.CI;
  }

  /** Runs one numbered step of the story; a step that throws becomes a failed cell, the story goes on. */
  async step(number, channel, title, fn) {
    const step = { number, channel, title, started: Date.now(), ms: 0, cells: 0 };
    this.#step = step;
    this.steps.push(step);
    this.#live(`step ${number} ${title}: starting`);
    try {
      await fn();
    } catch (error) {
      this.add({
        channel,
        attack: `step ${number} (${title})`,
        expected: "completes",
        verdict: "fail",
        observed: `error: ${error?.message ?? error}`,
      });
    }
    step.ms = Date.now() - step.started;
    const mine = this.cells.filter((cell) => cell.step === number);
    const tally = (verdict) => mine.filter((cell) => cell.verdict === verdict).length;
    this.#done(
      `step ${number} ${title}: ${mine.length} cells, ${tally("pass")} pass, ${tally("fail")} fail, ${tally("skipped")} skipped (${(step.ms / 1000).toFixed(1)} s)`,
    );
  }

  /**
   * One cell. `fn` returns {ok, observed, counts?, evidence?}; a throw is a failed cell with the error as observed.
   * `ok` must be computed from the answers: nothing here assumes a pass.
   */
  async cell(channel, attack, expected, fn) {
    const started = Date.now();
    this.#live(`step ${this.#step?.number ?? "-"} ${channel}: ${attack}`);
    try {
      const { ok, observed, counts = {}, evidence = [] } = await fn();
      return this.add({
        channel,
        attack,
        expected,
        verdict: ok ? "pass" : "fail",
        observed,
        counts,
        evidence,
        started,
      });
    } catch (error) {
      return this.add({
        channel,
        attack,
        expected,
        verdict: "fail",
        observed: `error: ${error?.message ?? error}`,
        started,
      });
    }
  }

  skip(channel, attack, reason) {
    return this.add({ channel, attack, expected: "-", verdict: "skipped", observed: `skipped (${reason})` });
  }

  add({ channel, attack, expected, verdict, observed, counts = {}, evidence = [], started = Date.now() }) {
    const cell = {
      step: this.#step?.number ?? null,
      channel,
      attack,
      expected,
      observed,
      verdict,
      counts,
      evidence: evidence.map((line) => String(line).slice(0, 2000)).slice(0, 50),
      ms: Date.now() - started,
    };
    this.cells.push(cell);
    if (verdict === "fail") this.#done(`  FAIL ${channel}: ${attack} — ${observed}`);
    return cell;
  }

  tally() {
    const count = (verdict) => this.cells.filter((cell) => cell.verdict === verdict).length;
    return { cells: this.cells.length, pass: count("pass"), fail: count("fail"), skipped: count("skipped") };
  }

  note(message) {
    this.#done(message);
  }

  /** Terminal only: one line rewritten in place, with the run's elapsed time and the cells done so far. */
  #live(message) {
    if (!this.#tty) return;
    const width = this.#out.columns > 20 ? this.#out.columns - 1 : 119;
    const elapsed = ((Date.now() - this.started) / 1000).toFixed(1);
    const line = `[${elapsed} s, ${this.cells.length} cells] ${message}`;
    this.#out.write(`\r\x1b[2K${line.slice(0, width)}`);
  }

  #done(message) {
    this.#out.write(this.#tty ? `\r\x1b[2K${message}\n` : `${message}\n`);
  }
}

/** Which of `needles` occur in `text` (the canaries of another tenant, in a response meant for this one). */
export function leaks(text, needles) {
  return needles.filter((needle) => needle && String(text).includes(needle));
}

export const short = (text, max = 160) => {
  const value = String(text).replace(/\s+/g, " ");
  return value.length > max ? `${value.slice(0, max)}…` : value;
};
