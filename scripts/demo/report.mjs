// The demo's report: a table on stdout, and demo/out/containment.{json,md,html}. The HTML is self-contained (no
// script, no external resource): a channel × attack matrix coloured by verdict, the evidence of every cell,
// timings, versions and the commit.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const MARK = { pass: "PASS", fail: "FAIL", skipped: "skip" };

export function versionsOf(root) {
  const version = (name) => {
    try {
      return JSON.parse(readFileSync(join(root, "node_modules", name, "package.json"), "utf8")).version;
    } catch {
      return "?";
    }
  };
  const git = (...args) => {
    try {
      return execFileSync("git", args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    } catch {
      return "";
    }
  };
  const dirty = git("status", "--porcelain", "--untracked-files=no") !== "";
  return {
    commit: `${git("rev-parse", "HEAD") || "unknown"}${dirty ? " (with uncommitted changes)" : ""}`,
    node: process.version,
    wrangler: version("wrangler"),
    "@modelcontextprotocol/server": version("@modelcontextprotocol/server"),
    "@modelcontextprotocol/client": version("@modelcontextprotocol/client"),
    "@modelcontextprotocol/sdk": version("@modelcontextprotocol/sdk"),
  };
}

const counts = (cell) =>
  Object.entries(cell.counts ?? {})
    .map(([key, value]) => `${key} ${value}`)
    .join(", ");

export function printTable(matrix, out = process.stdout) {
  const rows = matrix.cells.map((cell) => [
    cell.channel,
    cell.attack,
    cell.expected,
    cell.observed,
    MARK[cell.verdict],
    counts(cell),
  ]);
  const head = ["channel", "attack", "expected", "observed", "verdict", "counts"];
  const limits = [16, 48, 40, 70, 7, 60];
  const clip = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);
  const widths = head.map((title, i) =>
    Math.min(limits[i], Math.max(title.length, ...rows.map((row) => row[i].length))),
  );
  const line = (row) =>
    row
      .map((value, i) => clip(value, widths[i]).padEnd(widths[i]))
      .join("  ")
      .trimEnd();
  out.write(`\n${line(head)}\n${widths.map((w) => "-".repeat(w)).join("  ")}\n`);
  for (const row of rows) out.write(`${line(row)}\n`);
  const { cells, pass, fail, skipped } = matrix.tally();
  out.write(`\n${cells} cells: ${pass} pass, ${fail} fail, ${skipped} skipped\n`);
}

export function writeReport(dir, { matrix, meta }) {
  mkdirSync(dir, { recursive: true });
  const { cells: total, pass, fail, skipped } = matrix.tally();
  const requests = matrix.cells.reduce((n, cell) => n + (cell.counts?.requests ?? 0), 0);
  const summary = {
    ok: fail === 0,
    total,
    pass,
    fail,
    skipped,
    requests,
    ...meta,
    steps: matrix.steps,
    cells: matrix.cells,
  };
  writeFileSync(join(dir, "containment.json"), `${JSON.stringify(summary, null, 2)}\n`);
  writeFileSync(join(dir, "containment.md"), markdown(summary));
  writeFileSync(join(dir, "containment.html"), html(summary));
  return summary;
}

const mdCell = (text) => String(text).replace(/\|/g, "\\|").replace(/\n/g, " ");

function markdown(s) {
  const lines = [
    "# Cross-tenant containment report",
    "",
    `Verdict: **${s.ok ? "contained" : "LEAK OR FAILURE"}** — ${s.total} cells: ${s.pass} pass, ${s.fail} fail, ${s.skipped} skipped (${s.requests} requests in the attack cells).`,
    "",
    `Target: ${s.target} (${s.mode}); started ${s.startedAt}, ${(s.durationMs / 1000).toFixed(1)} s.`,
    "",
    "Versions: " +
      Object.entries(s.versions)
        .map(([k, v]) => `${k} ${v}`)
        .join("; "),
    "",
    `Tenants: A = \`${s.tenants.a}\`, B = \`${s.tenants.b}\`${s.tenants.control ? `, control = \`${s.tenants.control}\`` : ""}.`,
    "",
    ...(s.notes ?? []).map((note) => `- ${note}`),
    "",
    "| channel | attack | expected | observed | verdict | counts |",
    "|---|---|---|---|---|---|",
    ...s.cells.map(
      (c) =>
        `| ${mdCell(c.channel)} | ${mdCell(c.attack)} | ${mdCell(c.expected)} | ${mdCell(c.observed)} | ${MARK[c.verdict]} | ${mdCell(counts(c))} |`,
    ),
    "",
    "## Evidence",
    "",
  ];
  for (const c of s.cells) {
    lines.push(
      `### ${c.channel}: ${c.attack} — ${MARK[c.verdict]} (${c.ms} ms)`,
      "",
      "```",
      ...(c.evidence.length ? c.evidence : ["(none)"]),
      "```",
      "",
    );
  }
  return `${lines.join("\n")}\n`;
}

const esc = (text) =>
  String(text).replace(
    /[&<>"']/g,
    (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch],
  );

function html(s) {
  const channels = [...new Set(s.cells.map((c) => c.channel))];
  const cellId = (i) => `cell-${i}`;
  const matrixRows = channels
    .map((channel) => {
      const mine = s.cells.map((c, i) => ({ ...c, i })).filter((c) => c.channel === channel);
      const tiles = mine
        .map(
          (c) =>
            `<a class="tile ${c.verdict}" href="#${cellId(c.i)}" title="${esc(c.observed)}" data-verdict="${c.verdict}"><span class="v">${MARK[c.verdict]}</span>${esc(c.attack)}</a>`,
        )
        .join("");
      return `<tr data-channel="${esc(channel)}"><th scope="row">${esc(channel)}</th><td>${tiles}</td></tr>`;
    })
    .join("\n");
  const details = s.cells
    .map(
      (c, i) => `<section class="evidence ${c.verdict}" id="${cellId(i)}">
<h3><span class="badge ${c.verdict}">${MARK[c.verdict]}</span> ${esc(c.channel)} — ${esc(c.attack)}</h3>
<dl><dt>expected</dt><dd>${esc(c.expected)}</dd><dt>observed</dt><dd>${esc(c.observed)}</dd><dt>counts</dt><dd>${esc(counts(c) || "-")}</dd><dt>time</dt><dd>${c.ms} ms (step ${c.step ?? "-"})</dd></dl>
<pre>${esc(c.evidence.join("\n") || "(no further evidence)")}</pre></section>`,
    )
    .join("\n");
  const steps = s.steps
    .map((st) => `<tr><td>${st.number}</td><td>${esc(st.title)}</td><td>${(st.ms / 1000).toFixed(1)} s</td></tr>`)
    .join("");
  const versions = Object.entries(s.versions)
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`)
    .join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cross-tenant containment report</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d232a;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}h3{font-size:14px;margin:0 0 6px}
.verdict{display:inline-block;padding:6px 12px;border-radius:6px;font-weight:600;color:#fff}
.verdict.ok{background:#1f7a3d}.verdict.bad{background:#b42318}
table{border-collapse:collapse}#matrix th{ text-align:left;padding:8px 12px 8px 0;vertical-align:top;white-space:nowrap}
#matrix td{padding:4px 0}.tile{display:inline-block;margin:3px;padding:6px 8px;border-radius:5px;text-decoration:none;color:#111;font-size:12px;max-width:230px;vertical-align:top;border:1px solid rgba(0,0,0,.12)}
.tile .v{display:block;font-weight:700;font-size:11px}.pass{background:#d3f0dc}.fail{background:#fbd5d1}.skipped{background:#e8e8e8}
.badge{padding:1px 6px;border-radius:4px;font-size:11px}.evidence{background:#fff;border:1px solid #dde1e6;border-left:6px solid #9aa4ae;border-radius:6px;padding:10px 14px;margin:10px 0}
.evidence.pass{border-left-color:#1f7a3d}.evidence.fail{border-left-color:#b42318}.evidence.skipped{border-left-color:#8a8f96}
dl{display:grid;grid-template-columns:80px 1fr;gap:2px 10px;margin:4px 0 8px}dt{color:#5b6470}dd{margin:0}
pre{white-space:pre-wrap;word-break:break-all;background:#f3f5f7;padding:8px;border-radius:4px;font-size:12px;margin:0}
.meta td,.meta th{padding:2px 12px 2px 0;text-align:left;font-weight:normal}.meta th{color:#5b6470}
</style></head><body>
<h1>Cross-tenant containment report</h1>
<p><span class="verdict ${s.ok ? "ok" : "bad"}" id="verdict">${s.ok ? "Contained" : "Leak or failure"}</span>
&nbsp; ${s.total} cells: <b>${s.pass}</b> pass, <b>${s.fail}</b> fail, <b>${s.skipped}</b> skipped, ${s.requests} requests in the attack cells — ${esc(s.target)} (${esc(s.mode)}), ${esc(s.startedAt)}, ${(s.durationMs / 1000).toFixed(1)} s</p>
<p>Tenant A <code>${esc(s.tenants.a)}</code>, tenant B <code>${esc(s.tenants.b)}</code>${s.tenants.control ? `, control <code>${esc(s.tenants.control)}</code>` : ""}; every cell is a real request with a real check: B's answers scanned for A's fresh canaries, A's data read back after each attack, counts from the server.</p>
${(s.notes ?? []).length ? `<ul>${s.notes.map((n) => `<li>${esc(n)}</li>`).join("")}</ul>` : ""}
<h2>Channel × attack</h2>
<table id="matrix"><tbody>
${matrixRows}
</tbody></table>
<h2>Steps</h2><table class="meta"><tbody>${steps}</tbody></table>
<h2>Versions</h2><table class="meta"><tbody>${versions}</tbody></table>
<h2>Evidence</h2>
${details}
</body></html>
`;
}
