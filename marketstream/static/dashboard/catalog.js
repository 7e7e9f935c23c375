/**
 * The catalog (GET /api/v1/symbols): what the hub offers this visitor, each symbol with
 * its name, kind and reference price; search by symbol and name; the default watchlist.
 */

const DEFAULTS = ["AAPL", "MSFT", "NVDA", "SPY", "EUR/USD", "USD/JPY", "BTC/USD", "ETH/USD"];
const PER_KIND = 2; // when those are not offered: the first symbols of each kind

/** "eur/usd", "EURUSD" and "eur usd" all match "EUR/USD". */
function squash(text) {
  return text.toUpperCase().replace(/[^A-Z0-9]/g, "");
}

export class Catalog {
  constructor(auth) {
    this.auth = auth;
    this.entries = new Map(); // symbol -> {symbol, name, kind, epoch, reference, last}
  }

  /** Load the catalog: the HTTP status (0: the hub cannot be reached). */
  async load() {
    const { status, body } = await this.auth.getJson("/api/v1/symbols");
    if (status === 200 && Array.isArray(body?.symbols)) {
      this.entries = new Map(body.symbols.map((e) => [e.symbol, { ...e, key: squash(e.symbol) }]));
    }
    return status;
  }

  get(symbol) {
    return this.entries.get(symbol);
  }

  /** A few equities, FX and crypto pairs of the catalog. */
  defaults() {
    const chosen = DEFAULTS.filter((s) => this.entries.has(s));
    if (chosen.length >= 4) return chosen;
    const perKind = new Map();
    for (const entry of this.entries.values()) {
      const kind = entry.kind ?? "other";
      const list = perKind.get(kind) ?? [];
      if (list.length < PER_KIND) perKind.set(kind, [...list, entry.symbol]);
    }
    return [...new Set([...chosen, ...[...perKind.values()].flat()])].slice(0, DEFAULTS.length);
  }

  /** Up to `limit` entries matching `query`: by symbol first, then the name's start, a word's start, anywhere. */
  search(query, limit = 8) {
    const q = query.trim();
    if (!q) return [];
    const key = squash(q);
    const lower = q.toLowerCase();
    const found = [];
    for (const entry of this.entries.values()) {
      const name = (entry.name ?? "").toLowerCase();
      let rank;
      if (key && entry.key === key) rank = 0;
      else if (key && entry.key.startsWith(key)) rank = 1;
      else if (name.startsWith(lower)) rank = 2;
      else if (name.includes(` ${lower}`)) rank = 3;
      else if (key && entry.key.includes(key)) rank = 4;
      else if (name.includes(lower)) rank = 5;
      else continue;
      found.push([rank, entry]);
    }
    found.sort((a, b) => a[0] - b[0] || a[1].symbol.localeCompare(b[1].symbol));
    return found.slice(0, limit).map(([, entry]) => entry);
  }
}
