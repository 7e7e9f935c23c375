/**
 * The quote board: one row per symbol of the watchlist, with last, change and % change
 * from the catalog's reference price, bid, ask, spread, size, the time of the last tick,
 * a flash on each change of price, a sparkline, the updates per second received and the
 * symbol's throttle; a badge says why a symbol does not stream, or how many of its ticks
 * were lost. Columns sort; the keyboard moves the selection, rows and removes them
 * (board-input.js).
 *
 * Rendering is batched: ticks only mark their symbol dirty; `render` (once per animation
 * frame) writes the cells of dirty rows whose text changed, and only of rows on screen
 * (the others wait until they scroll into view). Rows are flex boxes of fixed height
 * with `contain: strict`, not table rows: a changed number lays out and repaints its own
 * row, not the table (a <table> measured three times the main-thread time at every tick:
 * docs/dashboard.md). Readouts that change slowly (updates/s, badges) are written by
 * `refresh`, four times a second.
 */
import { listen } from "./board-input.js";
import * as fmt from "./format.js";
import { drawSparkline } from "./sparkline.js";
import { throttleSelect } from "./throttle-select.js";

const FLASH_MS = 350;
const SPARK_EVERY_MS = 250; // a row's sparkline is drawn at most this often
const RESORT_EVERY_MS = 1000; // a sorted board reorders at most this often

// key, header, class ("num": right-aligned; "wide": hidden on phones)
export const COLUMNS = [
  ["symbol", "Symbol", ""],
  ["last", "Last", "num"],
  ["change", "Chg", "num wide"],
  ["pct", "% Chg", "num"],
  ["bid", "Bid", "num wide"],
  ["ask", "Ask", "num wide"],
  ["spread", "Spread", "num wide"],
  ["size", "Size", "num wide"],
  ["time", "Time", "num wide"],
  ["trend", "Trend", ""],
  ["rate", "Upd/s", "num wide"],
  ["throttle", "Throttle", "wide"],
  ["remove", "", ""],
];
export const SORTABLE = new Set(["symbol", "last", "change", "pct", "bid", "ask", "spread", "size", "time", "rate"]);

export class Board {
  /** el: the board's element (a header row is added, then #rows);
   *  view: {quote(symbol), info(symbol), rate(symbol), lost(symbol), reason(symbol), throttle(symbol)};
   *  on: {select(symbol), remove(symbol), move(symbol, delta), moveTo(symbol, index), throttle(symbol, ms),
   *  sort(sort), dirty(): rows need a frame} */
  constructor(el, body, view, on) {
    this.el = el;
    this.body = body;
    this.view = view;
    this.on = on;
    this.rows = new Map(); // symbol -> row
    this.order = []; // the watchlist's order
    this.dirty = new Set();
    this.offscreen = new Set(); // dirty rows out of view: painted when they come into view
    this.flashing = new Set();
    this.selected = null;
    this.sort = null; // {key, dir: 1 | -1}
    this.sortedAt = 0;
    this.head = this.header();
    this.seen = new IntersectionObserver((entries) => this.scrolled(entries));
    window.addEventListener("resize", () => {
      for (const row of this.rows.values()) {
        row.spark = null; // measured again: phone and laptop widths differ
        this.dirty.add(row.symbol);
      }
    });
    listen(this);
  }

  header() {
    const head = document.createElement("div");
    head.className = "row head";
    head.role = "row";
    for (const [key, label, cls] of COLUMNS) {
      const cell = document.createElement("div");
      cell.className = `cell ${key} ${cls}`;
      cell.role = "columnheader";
      cell.textContent = label;
      cell.dataset.key = key;
      if (SORTABLE.has(key)) {
        cell.tabIndex = 0;
        cell.classList.add("sortable");
        cell.setAttribute("aria-sort", "none");
      }
      head.append(cell);
    }
    this.el.prepend(head);
    return head;
  }

  scrolled(entries) {
    for (const entry of entries) {
      const row = this.rows.get(entry.target.dataset.symbol);
      if (!row) continue;
      row.visible = entry.isIntersecting;
      if (row.visible && this.offscreen.delete(row.symbol)) this.dirty.add(row.symbol);
    }
    if (this.dirty.size) this.on.dirty();
  }

  /** Show exactly `symbols`, in this order. */
  setSymbols(symbols) {
    this.order = [...symbols];
    for (const [symbol, row] of this.rows) {
      if (!symbols.includes(symbol)) {
        this.seen.unobserve(row.el);
        row.el.remove();
        this.rows.delete(symbol);
        for (const set of [this.dirty, this.offscreen, this.flashing]) set.delete(symbol);
      }
    }
    for (const symbol of symbols) if (!this.rows.has(symbol)) this.rows.set(symbol, this.row(symbol));
    this.arrange(true);
    this.refresh();
    if (!this.rows.has(this.selected)) this.select(symbols[0] ?? null);
  }

  row(symbol) {
    const el = document.createElement("div");
    el.className = "row";
    el.role = "row";
    el.dataset.symbol = symbol;
    el.draggable = true;
    const cells = {};
    for (const [key, , cls] of COLUMNS) {
      const cell = document.createElement("div");
      cell.className = `cell ${key} ${cls}`;
      cell.role = "gridcell";
      cells[key] = cell;
      el.append(cell);
    }
    cells.symbol.innerHTML = '<span class="sym"></span><span class="badge" hidden></span><span class="name"></span>';
    cells.symbol.firstChild.textContent = symbol;
    cells.symbol.lastChild.textContent = this.view.info(symbol)?.name ?? "";
    const canvas = document.createElement("canvas");
    cells.trend.append(canvas);
    cells.throttle.append(throttleSelect(this.view.throttle(symbol), `Throttle of ${symbol}`));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "×";
    remove.title = remove.ariaLabel = `Remove ${symbol}`;
    cells.remove.append(remove);
    this.seen.observe(el);
    this.dirty.add(symbol);
    return { symbol, el, cells, canvas, spark: null, visible: true, text: {}, flashUntil: 0, sparkAt: 0, shown: NaN };
  }

  markDirty(symbol) {
    if (this.rows.has(symbol)) this.dirty.add(symbol);
  }

  /** Write what changed since the last frame. True while there is more to do in a later frame. */
  render(now = performance.now()) {
    const dirty = this.dirty;
    this.dirty = new Set();
    for (const symbol of dirty) {
      const row = this.rows.get(symbol); // read every size before the first write: one layout
      if (row?.visible && row.spark === null) row.spark = [row.canvas.clientWidth, row.canvas.clientHeight];
    }
    for (const symbol of dirty) {
      const row = this.rows.get(symbol);
      if (row?.visible) this.paint(row, now);
      else if (row) this.offscreen.add(symbol);
    }
    for (const symbol of this.flashing) {
      const row = this.rows.get(symbol);
      if (row && now >= row.flashUntil) {
        row.cells.last.classList.remove("up", "down");
        this.flashing.delete(symbol);
      }
    }
    if (this.sort && now - this.sortedAt > RESORT_EVERY_MS) this.arrange(false);
    return this.flashing.size > 0 || this.dirty.size > 0;
  }

  put(row, key, text) {
    if (row.text[key] !== text) {
      row.text[key] = text;
      row.cells[key].textContent = text;
    }
  }

  paint(row, now) {
    const quote = this.view.quote(row.symbol);
    if (!quote) return;
    const d = quote.decimals;
    const reference = this.view.info(row.symbol)?.reference;
    const change = reference ? quote.price - reference : NaN;
    this.put(row, "last", fmt.price(quote.price, d));
    this.put(row, "change", fmt.signed(change, d));
    this.put(row, "pct", fmt.percent(reference ? (change / reference) * 100 : NaN));
    this.put(row, "bid", fmt.price(quote.bid, d));
    this.put(row, "ask", fmt.price(quote.ask, d));
    this.put(row, "spread", fmt.price(quote.ask - quote.bid, d));
    this.put(row, "size", fmt.size(quote.size));
    this.put(row, "time", fmt.time(quote.ts));
    const sign = change > 0 ? "pos" : change < 0 ? "neg" : "";
    if (row.text.sign !== sign) {
      row.text.sign = sign;
      for (const key of ["change", "pct"]) {
        row.cells[key].classList.toggle("pos", sign === "pos");
        row.cells[key].classList.toggle("neg", sign === "neg");
      }
    }
    if (Number.isFinite(row.shown) && quote.price !== row.shown) {
      const cell = row.cells.last;
      cell.classList.remove("up", "down");
      cell.classList.add(quote.price > row.shown ? "up" : "down");
      row.flashUntil = now + FLASH_MS;
      this.flashing.add(row.symbol);
    }
    row.shown = quote.price;
    if (now - row.sparkAt >= SPARK_EVERY_MS) {
      row.sparkAt = now;
      drawSparkline(row.canvas, quote.recent(), ...row.spark);
    } else {
      this.dirty.add(row.symbol); // drawn in a later frame: keep it dirty
    }
  }

  /** The slow readouts of the rows on screen: updates/s, and the badge: why a symbol does not
   *  stream, or how many of its ticks were lost. */
  refresh() {
    for (const row of this.rows.values()) {
      if (!row.visible) continue;
      this.put(row, "rate", fmt.rate(this.view.rate(row.symbol)));
      const lost = this.view.lost(row.symbol);
      const reason = this.view.reason(row.symbol) ?? (lost ? `lost ${lost}` : null);
      if (row.text.reason !== reason) {
        row.text.reason = reason;
        const badge = row.cells.symbol.children[1];
        badge.hidden = !reason;
        badge.textContent = reason ?? "";
        row.el.classList.toggle("refused", !!this.view.reason(row.symbol));
      }
    }
  }

  /** Put the rows in the watchlist's order, or the sort's (at most once a second, or `force`). */
  arrange(force) {
    this.sortedAt = performance.now();
    let symbols = this.order;
    if (this.sort) {
      const { key, dir } = this.sort;
      const values = new Map(symbols.map((s) => [s, this.sortValue(s, key)]));
      symbols = [...symbols].sort((a, b) => {
        const x = values.get(a);
        const y = values.get(b);
        if (typeof x === "string") return dir * x.localeCompare(y);
        return dir * ((Number.isFinite(x) ? x : -Infinity) - (Number.isFinite(y) ? y : -Infinity));
      });
    }
    const current = this.shown();
    if (!force && current.length === symbols.length && current.every((s, k) => s === symbols[k])) return;
    for (const symbol of symbols) this.body.append(this.rows.get(symbol).el);
  }

  sortValue(symbol, key) {
    const q = this.view.quote(symbol);
    const reference = this.view.info(symbol)?.reference;
    switch (key) {
      case "symbol":
        return symbol;
      case "last":
        return q?.price;
      case "change":
        return reference ? q?.price - reference : NaN;
      case "pct":
        return reference ? ((q?.price - reference) / reference) * 100 : NaN;
      case "spread":
        return q ? q.ask - q.bid : NaN;
      case "time":
        return q?.ts;
      case "rate":
        return this.view.rate(symbol);
      default:
        return q?.[key];
    }
  }

  setSort(sort) {
    this.sort = sort;
    for (const cell of this.head.children) {
      if (SORTABLE.has(cell.dataset.key)) {
        const on = sort && cell.dataset.key === sort.key;
        cell.setAttribute("aria-sort", on ? (sort.dir > 0 ? "ascending" : "descending") : "none");
      }
    }
    this.arrange(true);
  }

  /** A header's click: ascending, descending, then the watchlist's order. */
  cycleSort(key) {
    const s = this.sort;
    this.on.sort(!s || s.key !== key ? { key, dir: 1 } : s.dir > 0 ? { key, dir: -1 } : null);
  }

  select(symbol) {
    this.rows.get(this.selected)?.el.classList.remove("selected");
    this.selected = symbol;
    const row = symbol ? this.rows.get(symbol) : null;
    if (row) {
      row.el.classList.add("selected");
      row.el.scrollIntoView({ block: "nearest" });
    }
    this.on.select(symbol);
  }

  /** The symbols in the order shown. */
  shown() {
    return [...this.body.children].map((el) => el.dataset.symbol);
  }

  /** Show `ms` in the throttle select of `symbol` (after a change made elsewhere). */
  showThrottle(symbol, ms) {
    const select = this.rows.get(symbol)?.cells.throttle.firstChild;
    if (select) select.value = String(ms);
  }
}
