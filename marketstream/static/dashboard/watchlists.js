/**
 * Named watchlists, kept in localStorage: each an ordered list of symbols; one is shown.
 * Also kept there: each symbol's throttle and the board's sort. `onChange` is called after
 * every change (already saved).
 */

const ITEM = "marketstream.watchlists.v1";

export class Watchlists {
  constructor(storage = window.localStorage) {
    this.storage = storage;
    this.onChange = () => {};
    this.state = this.load();
  }

  load() {
    try {
      const state = JSON.parse(this.storage.getItem(ITEM) ?? "null");
      if (state && Array.isArray(state.lists) && state.lists.length) {
        state.lists = state.lists.filter((l) => typeof l?.name === "string" && Array.isArray(l.symbols));
        if (state.lists.length) {
          state.active = Math.min(Math.max(0, state.active | 0), state.lists.length - 1);
          state.throttles ??= {};
          state.sort ??= null;
          return state;
        }
      }
    } catch {
      // a damaged entry: start again
    }
    return { lists: [], active: 0, throttles: {}, sort: null };
  }

  save() {
    this.storage.setItem(ITEM, JSON.stringify(this.state));
    this.onChange();
  }

  get empty() {
    return this.state.lists.length === 0;
  }

  /** The first visit: one list of `symbols`. */
  ensure(symbols) {
    if (this.empty) {
      this.state.lists.push({ name: "Watchlist", symbols: [...symbols] });
      this.state.active = 0;
      this.save();
    }
  }

  get lists() {
    return this.state.lists;
  }

  get current() {
    return this.state.lists[this.state.active];
  }

  get symbols() {
    return this.current ? this.current.symbols : [];
  }

  has(symbol) {
    return this.symbols.includes(symbol);
  }

  add(symbol) {
    if (this.current && !this.has(symbol)) {
      this.current.symbols.push(symbol);
      this.save();
    }
  }

  remove(symbol) {
    const symbols = this.symbols;
    const at = symbols.indexOf(symbol);
    if (at >= 0) {
      symbols.splice(at, 1);
      this.save();
    }
  }

  /** Move `symbol` to position `index` of the current list. */
  moveTo(symbol, index) {
    const symbols = this.symbols;
    const at = symbols.indexOf(symbol);
    const to = Math.max(0, Math.min(symbols.length - 1, index));
    if (at < 0 || at === to) return;
    symbols.splice(at, 1);
    symbols.splice(to, 0, symbol);
    this.save();
  }

  move(symbol, delta) {
    this.moveTo(symbol, this.symbols.indexOf(symbol) + delta);
  }

  select(index) {
    if (index >= 0 && index < this.state.lists.length && index !== this.state.active) {
      this.state.active = index;
      this.save();
    }
  }

  create(name) {
    this.state.lists.push({ name, symbols: [] });
    this.state.active = this.state.lists.length - 1;
    this.save();
  }

  rename(name) {
    if (this.current && name.trim()) {
      this.current.name = name.trim();
      this.save();
    }
  }

  /** Delete the current list (never the last one). */
  drop() {
    if (this.state.lists.length > 1) {
      this.state.lists.splice(this.state.active, 1);
      this.state.active = Math.max(0, this.state.active - 1);
      this.save();
    }
  }

  throttle(symbol) {
    return this.state.throttles[symbol] ?? 0;
  }

  setThrottle(symbol, ms) {
    if (ms) this.state.throttles[symbol] = ms;
    else delete this.state.throttles[symbol];
    this.save();
  }

  get sort() {
    return this.state.sort;
  }

  setSort(sort) {
    this.state.sort = sort;
    this.save();
  }
}
