import { KbError } from "../errors";
import { unwrapKey, unwrapKeyIn, wrapKey, wrapKeyIn } from "./key-wrap";
import type { MasterKeys } from "./master-keys";

/**
 * One tenant's data keys (table `tenant_keys`, in that tenant's own object). Keys are random 256-bit values,
 * versioned, and stored only wrapped under the current master epoch (src/crypto/key-wrap.ts). Unwrapped keys live
 * in this instance's memory for the object's lifetime and nowhere else: never in logs, errors or responses.
 *
 * Purposes get their own HKDF-derived subkeys (`subkey`), so the same data key never serves two constructions.
 *
 * Besides the versioned data keys, one unversioned secret: the local embedder key (table `embedder_keys`, domain
 * "embedder-key"), random 256 bits, wrapped and rewrapped like the data keys and destroyed with them by the shred,
 * but never rotated: every stored vector was made with it, so a new one would mean re-embedding every atom.
 */
export interface KeyInfo {
  readonly version: number;
  readonly epoch: string;
  readonly createdAt: number;
  readonly current: boolean;
}

/** The embedder key is unversioned; its wrapping binds version 1 (src/crypto/key-wrap.ts, domain "embedder-key"). */
const EMBEDDER_KEY_VERSION = 1;

export type KeyPurpose = "atoms" | "blind-index" | "handles" | "request-state" | "vectors";

export class TenantKeyring {
  readonly #sql: SqlStorage;
  readonly #tenant: string;
  readonly #master: MasterKeys;
  readonly #keys = new Map<number, Uint8Array>();
  readonly #subkeys = new Map<string, Uint8Array>();
  #embedderKey: Uint8Array | null = null;
  /** Key creations run one at a time: callers that start in the same turn must not insert the same version. */
  #creating: Promise<unknown> = Promise.resolve();

  constructor(sql: SqlStorage, tenant: string, master: MasterKeys) {
    this.#sql = sql;
    this.#tenant = tenant;
    this.#master = master;
  }

  /** The current (newest) data key, created on first use. */
  async current(now = Date.now()): Promise<{ version: number; key: Uint8Array }> {
    const version =
      this.currentVersion() ?? (await this.#serial(async () => this.currentVersion() ?? this.#create(1, now)));
    return { version, key: await this.key(version) };
  }

  /** Every live version, the current one first (created on first use), then older ones newest first. */
  async liveVersions(now = Date.now()): Promise<number[]> {
    const { version } = await this.current(now);
    const older = this.list()
      .map((info) => info.version)
      .filter((v) => v !== version)
      .reverse();
    return [version, ...older];
  }

  currentVersion(): number | null {
    return (
      this.#sql
        .exec<{ v: number | null }>(`SELECT MAX(version) AS v FROM tenant_keys WHERE tenant = ?`, this.#tenant)
        .one().v ?? null
    );
  }

  async key(version: number): Promise<Uint8Array> {
    const cached = this.#keys.get(version);
    if (cached) return cached;
    const row = this.#sql
      .exec<{ epoch: string; wrapped: ArrayBuffer }>(
        `SELECT epoch, wrapped FROM tenant_keys WHERE tenant = ? AND version = ?`,
        this.#tenant,
        version,
      )
      .toArray()[0];
    if (!row) throw new KbError("ERR_KEY_UNAVAILABLE", "key unavailable");
    const key = await unwrapKey(this.#master, {
      tenant: this.#tenant,
      version,
      epoch: row.epoch,
      wrapped: new Uint8Array(row.wrapped),
    });
    this.#keys.set(version, key);
    return key;
  }

  async subkey(version: number, purpose: KeyPurpose): Promise<Uint8Array> {
    const cached = this.#subkeys.get(`${version}:${purpose}`);
    if (cached) return cached;
    const ikm = await crypto.subtle.importKey("raw", await this.key(version), "HKDF", false, ["deriveBits"]);
    const bits = await crypto.subtle.deriveBits(
      {
        name: "HKDF",
        hash: "SHA-256",
        salt: new TextEncoder().encode("tenant-mcp-kb/subkey/v1"),
        info: new TextEncoder().encode(`${this.#tenant}\0${version}\0${purpose}`),
      },
      ikm,
      256,
    );
    const subkey = new Uint8Array(bits);
    this.#subkeys.set(`${version}:${purpose}`, subkey);
    return subkey;
  }

  /** The local embedder key, or null when this tenant has none (not yet created, or destroyed by the shred). */
  async embedderKey(): Promise<Uint8Array | null> {
    if (this.#embedderKey) return this.#embedderKey;
    const row = this.#embedderRow();
    if (!row) return null;
    const key = await unwrapKeyIn("embedder-key", this.#master, {
      tenant: this.#tenant,
      version: EMBEDDER_KEY_VERSION,
      epoch: row.epoch,
      wrapped: new Uint8Array(row.wrapped),
    });
    // A shred that ran during the unwrap must not find the key cached again afterwards.
    if (this.shredded()) {
      key.fill(0);
      throw new KbError("ERR_TENANT_OFFBOARDED", "This tenant has been offboarded.");
    }
    this.#embedderKey = key;
    return key;
  }

  /** The local embedder key, created if missing (one at a time, like data keys; refused once shredded). */
  async createEmbedderKey(now = Date.now()): Promise<Uint8Array> {
    return this.#serial(async () => {
      const existing = await this.embedderKey();
      if (existing) return existing;
      const key = crypto.getRandomValues(new Uint8Array(32));
      const wrapped = await wrapKeyIn("embedder-key", this.#master, this.#tenant, EMBEDDER_KEY_VERSION, key);
      // Same reasoning as #create: checked after the await, in the synchronous step that inserts.
      if (this.shredded()) throw new KbError("ERR_TENANT_OFFBOARDED", "This tenant has been offboarded.");
      this.#sql.exec(
        `INSERT INTO embedder_keys (tenant, epoch, wrapped, created_at) VALUES (?, ?, ?, ?)`,
        this.#tenant,
        wrapped.epoch,
        wrapped.wrapped,
        now,
      );
      this.#embedderKey = key;
      return key;
    });
  }

  /** The embedder key's epoch and creation time (admin status), or null. */
  embedderKeyInfo(): { epoch: string; createdAt: number } | null {
    const row = this.#embedderRow();
    return row ? { epoch: row.epoch, createdAt: row.created_at } : null;
  }

  #embedderRow(): { epoch: string; wrapped: ArrayBuffer; created_at: number } | undefined {
    return this.#sql
      .exec<{ epoch: string; wrapped: ArrayBuffer; created_at: number }>(
        `SELECT epoch, wrapped, created_at FROM embedder_keys WHERE tenant = ?`,
        this.#tenant,
      )
      .toArray()[0];
  }

  /** Starts a new data key version; new writes use it, old versions stay readable until retired. */
  async rotate(now = Date.now()): Promise<number> {
    return this.#serial(() => this.#create((this.currentVersion() ?? 0) + 1, now));
  }

  #serial<T>(create: () => Promise<T>): Promise<T> {
    const run = this.#creating.then(create, create);
    this.#creating = run.catch(() => undefined);
    return run;
  }

  list(): KeyInfo[] {
    const current = this.currentVersion();
    return this.#sql
      .exec<{ version: number; epoch: string; created_at: number }>(
        `SELECT version, epoch, created_at FROM tenant_keys WHERE tenant = ? ORDER BY version`,
        this.#tenant,
      )
      .toArray()
      .map((row) => ({
        version: row.version,
        epoch: row.epoch,
        createdAt: row.created_at,
        current: row.version === current,
      }));
  }

  /**
   * Rewraps every key not under the current master epoch, the embedder key included (data untouched). Returns how
   * many were rewrapped.
   */
  async rewrapAll(): Promise<number> {
    let count = 0;
    for (const info of this.list()) {
      if (info.epoch === this.#master.current) continue;
      const key = await this.key(info.version);
      const wrapped = await wrapKey(this.#master, this.#tenant, info.version, key);
      this.#sql.exec(
        `UPDATE tenant_keys SET epoch = ?, wrapped = ? WHERE tenant = ? AND version = ?`,
        wrapped.epoch,
        wrapped.wrapped,
        this.#tenant,
        info.version,
      );
      count++;
    }
    const embedder = this.embedderKeyInfo();
    if (embedder && embedder.epoch !== this.#master.current) {
      const key = (await this.embedderKey()) as Uint8Array;
      const wrapped = await wrapKeyIn("embedder-key", this.#master, this.#tenant, EMBEDDER_KEY_VERSION, key);
      this.#sql.exec(
        `UPDATE embedder_keys SET epoch = ?, wrapped = ? WHERE tenant = ?`,
        wrapped.epoch,
        wrapped.wrapped,
        this.#tenant,
      );
      count++;
    }
    return count;
  }

  /** Destroys one version (its wrapped copy and the in-memory key). Data under it becomes unreadable. */
  destroy(version: number): void {
    this.#sql.exec(`DELETE FROM tenant_keys WHERE tenant = ? AND version = ?`, this.#tenant, version);
    this.#forget(version);
  }

  /** Crypto-shred: destroys every version and the embedder key. Returns how many data key versions were destroyed. */
  destroyAll(): number {
    const versions = this.list().map((info) => info.version);
    this.#sql.exec(`DELETE FROM tenant_keys WHERE tenant = ?`, this.#tenant);
    this.#sql.exec(`DELETE FROM embedder_keys WHERE tenant = ?`, this.#tenant);
    for (const version of versions) this.#forget(version);
    this.#keys.clear();
    this.#embedderKey?.fill(0);
    this.#embedderKey = null;
    return versions.length;
  }

  /** Whether the tenant is being or has been offboarded (src/tenant/lifecycle.ts keeps the state in tenant_meta). */
  shredded(): boolean {
    const state = this.#sql
      .exec<{ value: string }>(`SELECT value FROM tenant_meta WHERE key = 'state'`)
      .toArray()[0]?.value;
    return state !== undefined && state !== "active";
  }

  #forget(version: number): void {
    this.#keys.get(version)?.fill(0);
    this.#keys.delete(version);
    for (const [name, subkey] of this.#subkeys) {
      if (name.startsWith(`${version}:`)) {
        subkey.fill(0);
        this.#subkeys.delete(name);
      }
    }
  }

  async #create(version: number, now: number): Promise<number> {
    const key = crypto.getRandomValues(new Uint8Array(32));
    const wrapped = await wrapKey(this.#master, this.#tenant, version, key);
    // A shredded tenant never gets a key again. Work in flight when the keys were destroyed (the next batch of an
    // extraction run, a tool call that passed the lifecycle check before the shred) would otherwise mint a fresh
    // key under the live master epoch, write under it, and leave it behind a "completed" purge. Checked after the
    // await, right before the insert, so the check and the insert are one synchronous step.
    if (this.shredded()) throw new KbError("ERR_TENANT_OFFBOARDED", "This tenant has been offboarded.");
    this.#sql.exec(
      `INSERT INTO tenant_keys (tenant, version, epoch, wrapped, created_at) VALUES (?, ?, ?, ?, ?)`,
      this.#tenant,
      version,
      wrapped.epoch,
      wrapped.wrapped,
      now,
    );
    this.#keys.set(version, key);
    return version;
  }
}
