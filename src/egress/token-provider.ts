import type { Identity } from "../auth/identity";
import type { Config } from "../config";
import { KbError } from "../errors";
import type { DownstreamResource } from "./egress-policy";

/**
 * Exchanged tokens for downstream calls made on behalf of one caller of one tenant: issued by this server's own
 * token service (RFC 8693, signed by the registry's keys) or by an external identity provider's token endpoint.
 * The client's inbound token is never used: the subject of an external exchange is a short-lived assertion this
 * server signs for the caller. Tokens are cached per tenant (this instance lives in the tenant's object), subject,
 * audience and scope until shortly before they expire.
 */
export interface TokenSigner {
  sign(claims: Record<string, unknown>, ttlSeconds: number): Promise<string>;
}

const EARLY_REFRESH_S = 30;

export class ExchangedTokens {
  readonly #tenant: string;
  readonly #config: Config;
  readonly #signer: TokenSigner;
  readonly #fetcher: typeof fetch;
  readonly #cache = new Map<string, { token: string; expiresAt: number }>();

  constructor(tenant: string, config: Config, signer: TokenSigner, fetcher: typeof fetch = fetch) {
    this.#tenant = tenant;
    this.#config = config;
    this.#signer = signer;
    this.#fetcher = fetcher;
  }

  /** Claims of a token this server issues for `identity` towards `target` (the exchange endpoint uses it too). */
  claims(identity: Identity, target: DownstreamResource, scopes: readonly string[]): Record<string, unknown> {
    return {
      sub: identity.subject,
      aud: target.audience,
      tenant_id: this.#tenant,
      scope: scopes.join(" "),
      // RFC 8693 section 4.1: this server acts for the subject.
      act: { sub: this.#config.exchangeIssuer },
    };
  }

  async tokenFor(identity: Identity, target: DownstreamResource, now = Date.now()): Promise<string> {
    // Never wider than the caller: only the target's scopes that the caller's own token also carries.
    const scopes = target.scopes.filter((scope) => identity.scopes.includes(scope));
    const key = `${identity.subject}\0${target.audience}\0${scopes.join(" ")}`;
    const cached = this.#cache.get(key);
    if (cached && cached.expiresAt - EARLY_REFRESH_S * 1000 > now) return cached.token;
    const { token, expiresIn } = this.#config.externalExchange
      ? await this.#external(identity, target, scopes)
      : {
          token: await this.#signer.sign(this.claims(identity, target, scopes), this.#config.exchangeTtlS),
          expiresIn: this.#config.exchangeTtlS,
        };
    this.#remember(key, { token, expiresAt: now + expiresIn * 1000 }, now);
    return token;
  }

  /** Number of tokens cached for this tenant. */
  get size(): number {
    return this.#cache.size;
  }

  /**
   * The cache is bounded per tenant (QUOTA_EXCHANGED_TOKENS): expired tokens go first, then the oldest. It is a
   * cache, so going over the bound evicts rather than refuses.
   */
  #remember(key: string, entry: { token: string; expiresAt: number }, now: number): void {
    this.#cache.delete(key);
    this.#cache.set(key, entry);
    if (this.#cache.size <= this.#config.quotas.exchangedTokens) return;
    for (const [name, cached] of this.#cache) if (cached.expiresAt <= now) this.#cache.delete(name);
    while (this.#cache.size > this.#config.quotas.exchangedTokens) {
      const oldest = this.#cache.keys().next().value;
      if (oldest === undefined) break;
      this.#cache.delete(oldest);
    }
  }

  async #external(
    identity: Identity,
    target: DownstreamResource,
    scopes: readonly string[],
  ): Promise<{ token: string; expiresIn: number }> {
    const external = this.#config.externalExchange as NonNullable<Config["externalExchange"]>;
    const assertion = await this.#signer.sign(
      {
        sub: identity.subject,
        aud: external.tokenUrl,
        tenant_id: this.#tenant,
        act: { sub: this.#config.exchangeIssuer },
      },
      60,
    );
    const form = new URLSearchParams({
      grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
      subject_token: assertion,
      subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
      resource: target.resource,
      audience: target.audience,
      ...(scopes.length ? { scope: scopes.join(" ") } : {}),
    });
    let response: Response;
    try {
      response = await this.#fetcher(external.tokenUrl, {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          authorization: `Basic ${btoa(`${encodeURIComponent(external.clientId)}:${encodeURIComponent(external.clientSecret)}`)}`,
        },
        body: form,
        signal: AbortSignal.timeout(this.#config.egressTimeoutMs),
      });
    } catch {
      throw new KbError("ERR_EGRESS_FAILED", "the token exchange failed");
    }
    const body = (await response.json().catch(() => null)) as { access_token?: unknown; expires_in?: unknown } | null;
    if (!response.ok || typeof body?.access_token !== "string") {
      throw new KbError("ERR_EGRESS_FAILED", "the token exchange failed");
    }
    const expiresIn = typeof body.expires_in === "number" ? Math.min(body.expires_in, 3600) : 60;
    return { token: body.access_token, expiresIn };
  }
}
