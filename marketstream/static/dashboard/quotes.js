/**
 * The latest quote of each symbol, what changed with the last tick, and the recent
 * prices its sparkline draws.
 */
import { decimalsOf } from "./format.js";

export const POINTS = 60; // prices kept per symbol for its sparkline

export class Quote {
  constructor(symbol) {
    this.symbol = symbol;
    this.price = NaN;
    this.bid = NaN;
    this.ask = NaN;
    this.size = NaN;
    this.ts = NaN;
    this.move = 0; // +1 up, -1 down, 0 unchanged: the last tick against the one before
    this.decimals = 0;
    this.points = new Float64Array(POINTS);
    this.count = 0; // prices written into `points` (a ring)
  }

  take(tick) {
    if (Number.isFinite(this.price)) this.move = Math.sign(tick.price - this.price);
    this.price = tick.price;
    this.bid = tick.bid;
    this.ask = tick.ask;
    this.size = tick.size;
    this.ts = tick.ts;
    const d = Math.max(decimalsOf(tick.price), decimalsOf(tick.bid), decimalsOf(tick.ask));
    if (d > this.decimals) this.decimals = d;
    this.points[this.count % POINTS] = tick.price;
    this.count += 1;
  }

  /** The prices kept, oldest first. */
  recent() {
    const n = Math.min(this.count, POINTS);
    const out = new Array(n);
    for (let k = 0; k < n; k++) out[k] = this.points[(this.count - n + k) % POINTS];
    return out;
  }
}

export class Quotes {
  constructor() {
    this.quotes = new Map();
  }

  take(tick) {
    let quote = this.quotes.get(tick.symbol);
    if (quote === undefined) this.quotes.set(tick.symbol, (quote = new Quote(tick.symbol)));
    quote.take(tick);
    return quote;
  }

  get(symbol) {
    return this.quotes.get(symbol);
  }

  forget(symbol) {
    this.quotes.delete(symbol);
  }
}
