/**
 * What the page wants to receive, and what this connection holds: each wanted symbol at
 * its throttle, and the bars of the chart's symbol at the chart's interval. `sync` sends
 * the subscribes and unsubscribes that make the connection hold what is wanted, grouped
 * into one request per throttle and bars; a symbol new on the connection is subscribed
 * with `since` from the seq book, so a reconnect resumes where it stopped. Symbols the
 * hub refused (`rejected` in an ack) or ended (`unsubscribed`) keep their reason until
 * the watchlist or the connection changes.
 */

const RETRY_UNAVAILABLE_MS = 3000;

export const REASONS = {
  forbidden: "forbidden",
  unknown_symbol: "unknown",
  limit_exceeded: "over limit",
  unavailable: "unavailable",
  bad_symbol: "bad symbol",
};

export class Subscriptions {
  constructor(stream, book) {
    this.stream = stream;
    this.book = book;
    this.wanted = new Map(); // symbol -> throttle_ms
    this.chart = null; // {symbol, interval}
    this.held = new Map(); // symbol -> {throttle, bars}: sent on this connection
    this.effective = new Map(); // symbol -> the throttle the hub applied (its ack)
    this.refused = new Map(); // symbol -> reason
    this.nextId = 0;
    this.queued = false;
  }

  /** Want exactly these symbols (a Map symbol -> throttle_ms). */
  want(wanted) {
    for (const symbol of this.refused.keys()) if (!wanted.has(symbol)) this.refused.delete(symbol);
    this.wanted = new Map(wanted);
    this.schedule();
  }

  /** The bars of `symbol` at `interval` (one of 1s 5s 1m 5m 1h), or none (null). */
  chartBars(symbol, interval) {
    this.chart = symbol ? { symbol, interval } : null;
    this.schedule();
  }

  /** A new connection holds nothing yet. */
  connected() {
    this.held.clear();
    this.refused.clear();
    this.schedule();
  }

  schedule() {
    if (this.queued) return;
    this.queued = true;
    setTimeout(() => {
      this.queued = false;
      this.sync();
    }, 0); // the changes of one event (a click, a key) go out together
  }

  sync() {
    if (!this.stream.open) return;
    const gone = [...this.held.keys()].filter((s) => !this.wanted.has(s));
    if (gone.length) {
      this.stream.send({ op: "unsubscribe", id: ++this.nextId, symbols: gone });
      for (const symbol of gone) {
        this.held.delete(symbol);
        this.effective.delete(symbol);
        this.book.forget(symbol);
      }
    }
    const groups = new Map();
    for (const [symbol, throttle] of this.wanted) {
      if (this.refused.has(symbol)) continue;
      const bars = this.chart?.symbol === symbol ? this.chart.interval : "";
      const held = this.held.get(symbol);
      if (held && held.throttle === throttle && held.bars === bars) continue;
      const key = `${throttle}|${bars}`;
      if (!groups.has(key)) groups.set(key, { throttle, bars, symbols: [] });
      groups.get(key).symbols.push(symbol);
    }
    for (const { throttle, bars, symbols } of groups.values()) {
      const fresh = symbols.filter((s) => !this.held.has(s));
      const request = { op: "subscribe", id: ++this.nextId, symbols, throttle_ms: throttle, bars: bars ? [bars] : [] };
      const since = this.book.since(fresh);
      if (Object.keys(since).length) request.since = since;
      if (!this.stream.send(request)) return;
      for (const symbol of symbols) this.held.set(symbol, { throttle, bars });
    }
  }

  /** A subscribe's ack: what it applied (effective throttle, epochs) and what it refused. */
  acked(ack) {
    if (ack.op !== "subscribe") return;
    this.book.acked(ack);
    for (const symbol of ack.symbols ?? []) this.effective.set(symbol, ack.throttle_ms);
    for (const [symbol, code] of Object.entries(ack.rejected ?? {})) this.refuse(symbol, code);
  }

  /** The hub ended these subscriptions itself (`unsubscribed`). */
  ended(message) {
    for (const symbol of message.symbols ?? []) this.refuse(symbol, message.reason);
  }

  refuse(symbol, code) {
    this.held.delete(symbol);
    this.effective.delete(symbol);
    this.refused.set(symbol, code);
    if (code === "unavailable") {
      setTimeout(() => {
        if (this.refused.get(symbol) === "unavailable") {
          this.refused.delete(symbol);
          this.schedule();
        }
      }, RETRY_UNAVAILABLE_MS);
    }
  }

  /** Why `symbol` is not streaming ("forbidden", ...), or null. */
  reason(symbol) {
    const code = this.refused.get(symbol);
    return code === undefined ? null : (REASONS[code] ?? code);
  }
}
