import type { ConsentDescription } from "@cloudflare/workers-oauth-provider";

/**
 * HTML of the sign-in, consent and refusal pages. Pure. Everything that came from a client (name, URIs, scopes,
 * registered metadata) or a user (tenant, subject) is escaped; no script runs on these pages (CSP in pageResponse).
 */
const escapeHtml = (value: string): string => value.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);

const STYLE =
  "body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}" +
  "label{display:block;margin:.5rem 0}input[type=text]{width:100%;padding:.3rem}button{margin-right:1rem;padding:.4rem 1rem}" +
  ".warn{background:#fff3cd;padding:.5rem}.dev{background:#e7f1ff;padding:.5rem}";

function layout(title: string, body: string): string {
  return (
    `<!doctype html><html lang="en"><meta charset="utf-8"><meta name="viewport" content="width=device-width">` +
    `<title>${escapeHtml(title)}</title><style>${STYLE}</style><body>${body}</body></html>`
  );
}

export interface SignInView {
  readonly clientName: string;
  /** Where the dev sign-in form posts (this URL), or null when the dev sign-in is off. */
  readonly devAction: string | null;
  /** The upstream sign-in link, or null when no identity provider is configured. */
  readonly upstreamHref: string | null;
  readonly error?: string;
}

/** Sign-in: through the operator's identity provider, and/or (outside production) the dev sign-in form. */
export function signInPage(view: SignInView): string {
  const upstream = view.upstreamHref
    ? `<p><a id="upstream" href="${escapeHtml(view.upstreamHref)}">Sign in with your organization's account</a></p>`
    : "";
  const dev = view.devAction
    ? `<p class="dev">Development sign-in: you choose the tenant and subject. It is refused when ENVIRONMENT is ` +
      `production.</p><form method="post" action="${escapeHtml(view.devAction)}">` +
      `<input type="hidden" name="step" value="signin">` +
      `<label>Tenant <input type="text" name="tenant" required pattern="[a-z0-9][a-z0-9-]{1,62}" autocomplete="off"></label>` +
      `<label>Subject <input type="text" name="subject" required maxlength="255" autocomplete="username"></label>` +
      `<button type="submit">Continue</button></form>`
    : "";
  return layout(
    "Sign in",
    `<h1>Sign in</h1><p><strong>${escapeHtml(view.clientName)}</strong> asks to connect.</p>` +
      (view.error ? `<p class="warn" role="alert">${escapeHtml(view.error)}</p>` : "") +
      upstream +
      dev,
  );
}

export interface ConsentView {
  readonly details: ConsentDescription;
  readonly handle: string;
  readonly tenant: string;
  readonly subject: string;
  /** Scopes the client may be granted (requested ones are pre-ticked). */
  readonly scopesSupported: readonly string[];
}

export function consentPage(view: ConsentView): string {
  const { details } = view;
  const name = escapeHtml(details.clientName);
  const origin = details.clientDomain
    ? `Published by <strong>${escapeHtml(details.clientDomain)}</strong> (verified: its client ID is a URL on that domain).`
    : "This app registered itself; its name is not verified.";
  const loopback = details.redirectIsLoopback
    ? `<p class="warn"><strong>Access will be sent to an app on this computer.</strong> Continue only if you just ` +
      `started signing in from it.</p>`
    : "";
  const requested = new Set(details.scope);
  const scopes = [...new Set([...details.scope, ...view.scopesSupported])]
    .map(
      (scope) =>
        `<label><input type="checkbox" name="scope" value="${escapeHtml(scope)}"${requested.has(scope) ? " checked" : ""}> ` +
        `${escapeHtml(scope)}${requested.has(scope) ? "" : " (not requested)"}</label>`,
    )
    .join("");
  return layout(
    `Authorize ${details.clientName}`,
    `<h1>Allow ${name} to access your knowledge base?</h1><p>${origin}</p>` +
      `<p>Tenant: <strong data-tenant>${escapeHtml(view.tenant)}</strong><br>Signed in as: <strong>${escapeHtml(view.subject)}</strong></p>` +
      `<p>Access will be sent to <strong>${escapeHtml(details.redirectHost)}</strong>.</p>${loopback}` +
      `<form method="post" action="/authorize"><input type="hidden" name="step" value="consent">` +
      `<input type="hidden" name="handle" value="${escapeHtml(view.handle)}"><fieldset><legend>Scopes</legend>${scopes}</fieldset>` +
      `<p><button name="decision" value="approve">Allow</button><button name="decision" value="deny">Deny</button></p></form>`,
  );
}

export function refusalPage(title: string, message: string, returnTo?: { href: string; host: string }): string {
  const back = returnTo
    ? `<p><a href="${escapeHtml(returnTo.href)}">Return to ${escapeHtml(returnTo.host)}</a></p>`
    : "";
  return layout(title, `<h1>${escapeHtml(title)}</h1><p role="alert">${escapeHtml(message)}</p>${back}`);
}

/** An HTML response that cannot be framed, runs no script and is never cached. */
export function pageResponse(html: string, status = 200, headers?: Headers): Response {
  const out = new Headers(headers);
  out.set("content-type", "text/html; charset=utf-8");
  out.set("cache-control", "no-store");
  out.set("x-content-type-options", "nosniff");
  out.set("x-frame-options", "DENY");
  // same-origin: the redirect to the client carries no Referer, and our own form posts keep a real Origin
  // (under no-referrer, Chromium sends `Origin: null`, which the form check refuses).
  out.set("referrer-policy", "same-origin");
  out.set(
    "content-security-policy",
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
  );
  return new Response(html, { status, headers: out });
}
