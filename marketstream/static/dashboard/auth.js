/**
 * Keys and tokens (docs/security.md). The key the visitor types is kept in sessionStorage
 * (this tab only; gone when it closes) and is sent only to POST /api/v1/tokens, which
 * trades it for a token that lives a few minutes. Tokens are kept in memory only; the
 * stream (`?token=`) and the API calls send them. Without a key nothing is sent: the hub
 * admits the page anonymously or by its session, if it does.
 */

const KEY_ITEM = "marketstream.key";
const REFRESH_BEFORE_MS = 30_000; // mint a new token when the one held expires sooner

/** A credential problem. `final`: retrying will not help (the key was refused). */
export class AuthError extends Error {
  constructor(message, final) {
    super(message);
    this.final = final;
  }
}

export class Auth {
  constructor(storage = window.sessionStorage) {
    this.storage = storage;
    this.held = null; // {token, expiresAt}
  }

  get key() {
    return this.storage.getItem(KEY_ITEM);
  }

  setKey(key) {
    this.storage.setItem(KEY_ITEM, key.trim());
    this.held = null;
  }

  forget() {
    this.storage.removeItem(KEY_ITEM);
    this.held = null;
  }

  /** A token for the next request (minted when needed), or null without a key. */
  async token() {
    const key = this.key;
    if (!key) return null;
    if (this.held && this.held.expiresAt - Date.now() > REFRESH_BEFORE_MS) return this.held.token;
    this.minting ??= this.mint(key).finally(() => (this.minting = null)); // callers at the same time share one
    return this.minting;
  }

  async mint(key) {
    let response;
    try {
      response = await fetch("/api/v1/tokens", {
        method: "POST",
        headers: { Authorization: `Bearer ${key}` },
        cache: "no-store",
      });
    } catch (err) {
      throw new AuthError(`cannot reach the hub for a token (${err.message})`, false);
    }
    const body = await response.json().catch(() => ({}));
    if (response.status === 401 || response.status === 403) {
      throw new AuthError(`the key was refused: ${body.message ?? response.status}`, true);
    }
    if (!response.ok || typeof body.token !== "string") {
      throw new AuthError(`no token (HTTP ${response.status})`, false);
    }
    this.held = { token: body.token, expiresAt: Date.now() + body.expires_in * 1000 };
    return body.token;
  }

  /** `path` with this page's credential (`?token=`), when it has one. */
  async url(path) {
    const token = await this.token();
    if (!token) return path;
    return `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
  }

  /** GET a JSON API: {status, body}; status 0 when the hub cannot be reached. */
  async getJson(path) {
    try {
      const response = await fetch(await this.url(path), { cache: "no-store" });
      return { status: response.status, body: await response.json().catch(() => null) };
    } catch (err) {
      if (err instanceof AuthError) throw err;
      return { status: 0, body: null };
    }
  }
}
