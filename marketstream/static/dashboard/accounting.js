/**
 * Accounting for every seq (docs/protocol.md): per symbol, the epoch and the last seq
 * received, the ticks lost before the hub (`seq - previous - 1 - conflated`), the ticks
 * conflated, resets and reconnects that could not be recovered. What it holds is what a
 * reconnect sends as `since`.
 */

export class Entry {
  constructor() {
    this.epoch = null;
    this.seq = null; // the last seq received; null before the first (or after a reset)
    this.lost = 0;
    this.conflated = 0;
    this.received = 0;
    this.resets = 0;
    this.recovered = 0; // subscribes with `since` that the hub recovered
    this.unrecovered = 0; // ... and those it answered with a snapshot instead
    this.duplicates = 0; // never expected: the hub filters them
  }
}

export class SeqBook {
  constructor() {
    this.entries = new Map();
  }

  entry(symbol) {
    let entry = this.entries.get(symbol);
    if (entry === undefined) this.entries.set(symbol, (entry = new Entry()));
    return entry;
  }

  /** `since` for a subscribe of these symbols: {symbol: {seq, epoch}} for those held. */
  since(symbols) {
    const since = {};
    for (const symbol of symbols) {
      const entry = this.entries.get(symbol);
      if (entry?.seq != null && entry.epoch) since[symbol] = { seq: entry.seq, epoch: entry.epoch };
    }
    return since;
  }

  /** A subscribe's ack: the epochs, and whether each `since` was recovered. */
  acked(ack) {
    const epochs = ack.epochs ?? {};
    const recovered = ack.recovered ?? {};
    for (const symbol of ack.symbols ?? []) {
      const entry = this.entry(symbol);
      if (symbol in recovered) {
        if (recovered[symbol]) entry.recovered += 1;
        else {
          entry.unrecovered += 1;
          entry.seq = null; // a snapshot comes instead: start again from it
        }
      }
      const epoch = epochs[symbol];
      if (epoch !== undefined && epoch !== entry.epoch) {
        if (entry.epoch !== null) entry.seq = null; // another life of the seq
        entry.epoch = epoch;
      }
    }
  }

  /** Count a tick; false for a seq already received (dropped). */
  take(tick, snapshot) {
    const entry = this.entry(tick.symbol);
    const conflated = tick.conflated ?? 0;
    if (entry.seq !== null && tick.seq <= entry.seq) {
      entry.duplicates += 1;
      return false;
    }
    if (entry.seq !== null && !snapshot) {
      entry.lost += Math.max(0, tick.seq - entry.seq - 1 - conflated);
      entry.conflated += conflated;
    }
    entry.seq = tick.seq;
    entry.received += 1;
    return true;
  }

  /** `reset`: a new epoch; its next tick is the first (no false loss). */
  reset(symbol, epoch) {
    const entry = this.entry(symbol);
    entry.epoch = epoch;
    entry.seq = null;
    entry.resets += 1;
  }

  forget(symbol) {
    this.entries.delete(symbol);
  }

  totalLost() {
    let lost = 0;
    for (const entry of this.entries.values()) lost += entry.lost;
    return lost;
  }
}
