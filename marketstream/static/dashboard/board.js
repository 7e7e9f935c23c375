/**
 * The quote board: one row per symbol of the watchlist, with last, change and % change
 * from the catalog's reference price, bid, ask, spread, size, the time of the last tick,
 * a flash on each change of price, a sparkline, the updates per second received, the
 * symbol's throttle and its lost ticks. Columns sort; the keyboard moves the selection,
 * moves rows and removes them.
 *
 * Rendering is batched: ticks only mark their symbol dirty; `render` (once per animation
 * frame) writes the cells of dirty rows whose text changed. Readouts that change slowly
 * (updates/s, lost, reasons) are written by `refresh`, a few times a second.
 */
import * as fmt from "./format.js";
import { drawSparkline } from "./sparkline.js";

const FLASH_MS = 350;
const SPARK_EVERY_MS = 250; // a row's sparkline is drawn at most this often
const RESORT_EVERY_MS = 1000; // a sorted board reorders at most this often

// key, header, class ("num": right-aligned; "wide": hidden on narrow screens)
const COLUMNS = [
  ["symbol", "Symbol", ""],
  ["last", "Last", "num"],
  ["change", "Chg", "num wide"],
  ["pct", "% Chg", "num"],
  ["bid", "Bid", "num wide"],
  ["ask", "Ask", "num wide"],
  ["spread", "Spread", "num wide"],
  ["size", "Size", "num wide"],
  ["time", "Time", "num wide"],
  ["trend", "Trend", "trend"],
  ["rate", "Upd/s", "num wide"],
  ["throttle", "Throttle", "wide"],
  ["lost", "Lost", "num wide"],
  ["remove", "", "remove"],
];
const SORTABLE = new Set(["symbol", "last", "change", "pct", "bid", "ask", "spread", "size", "time", "rate", "lost"]);

export function throttleSelect(value, label) {
  const select = document.createElement("select");
  select.className = "throttle";
  select.setAttribute("aria-label", label);
  for (const [ms, text] of fmt.THROTTLES) select.add(new Option(text, String(ms), false, ms === value));
  return select;
}

export class Board {
  /** view: {quote(symbol), info(symbol), rate(symbol), lost(symbol), reason(symbol), throttle(symbol)};
   *  on: {select(symbol), remove(symbol), move(symbol, delta), moveTo(symbol, index), throttle(symbol, ms), sort(sort)} */
  constructor(table, view, on) {
    this.table = table;
    this.view = view;
    this.on = on;
    this.body = table.tBodies[0];
    this.rows = new Map(); // symbol -> row
    this.order = []; // the watchlist's order
    this.dirty = new Set();
    this.flashing = new Set();
    this.selected = null;
    this.sort = null; // {key, dir: 1 | -1}
    this.sortedAt = 0;
    this.header();
    this.listen();
  }

  header() {
    const tr = this.table.tHead.rows[0];
    for (const [key, label, cls] of COLUMNS) {
      const th = document.createElement("th");
      th.textContent = label;
      th.className = `${key} ${cls}`;
      th.dataset.key = key;
      if (SORTABLE.has(key)) {
        th.tabIndex = 0;
        th.classList.add("sortable");
        th.setAttribute("aria-sort", "none");
      }
      tr.append(th);
    }
  }

  /** Show exactly `symbols`, in this order. */
  setSymbols(symbols) {
    this.order = [...symbols];
    for (const [symbol, row] of this.rows) {
      if (!symbols.includes(symbol)) {
        row.tr.remove();
        this.rows.delete(symbol);
        this.dirty.delete(symbol);
        this.flashing.delete(symbol);
      }
    }
    for (const symbol of symbols) if (!this.rows.has(symbol)) this.rows.set(symbol, this.row(symbol));
    this.arrange(true);
    this.refresh();
    if (!this.rows.has(this.selected)) this.select(symbols[0] ?? null);
  }

  row(symbol) {
    const tr = document.createElement("tr");
    tr.dataset.symbol = symbol;
    tr.draggable = true;
    const cells = {};
    for (const [key, , cls] of COLUMNS) {
      const td = document.createElement("td");
      td.className = `${key} ${cls}`;
      cells[key] = td;
      tr.append(td);
    }
    const info = this.view.info(symbol);
    cells.symbol.innerHTML = '<span class="sym"></span><span class="name"></span><span class="badge" hidden></span>';
    cells.symbol.firstChild.textContent = symbol;
    cells.symbol.children[1].textContent = info?.name ?? "";
    const canvas = document.createElement("canvas");
    cells.trend.append(canvas);
    cells.throttle.append(throttleSelect(this.view.throttle(symbol), `Throttle of ${symbol}`));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "×";
    remove.title = remove.ariaLabel = `Remove ${symbol}`;
    cells.remove.append(remove);
    const row = { symbol, tr, cells, canvas, text: {}, flashUntil: 0, sparkAt: 0, shownPrice: NaN };
    this.dirty.add(symbol);
    return row;
  }

  markDirty(symbol) {
    if (this.rows.has(symbol)) this.dirty.add(symbol);
  }

  /** Write what changed since the last frame. True while there is more to do in a later frame. */
  render(now = performance.now()) {
    const dirty = this.dirty;
    this.dirty = new Set();
    for (const symbol of dirty) this.paint(this.rows.get(symbol), now);
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
    const quote = row && this.view.quote(row.symbol);
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
    if (Number.isFinite(row.shownPrice) && quote.price !== row.shownPrice) {
      const cell = row.cells.last;
      cell.classList.remove("up", "down");
      cell.classList.add(quote.price > row.shownPrice ? "up" : "down");
      row.flashUntil = now + FLASH_MS;
      this.flashing.add(row.symbol);
    }
    row.shownPrice = quote.price;
    if (now - row.sparkAt >= SPARK_EVERY_MS) {
      row.sparkAt = now;
      drawSparkline(row.canvas, quote.recent());
    } else {
      this.dirty.add(row.symbol); // drawn in a later frame: keep it dirty
    }
  }

  /** The slow readouts of every row: updates/s, lost, why a symbol is not streaming. */
  refresh() {
    for (const row of this.rows.values()) {
      this.put(row, "rate", fmt.rate(this.view.rate(row.symbol)));
      this.put(row, "lost", String(this.view.lost(row.symbol)));
      const reason = this.view.reason(row.symbol);
      if (row.text.reason !== reason) {
        row.text.reason = reason;
        const badge = row.cells.symbol.lastChild;
        badge.hidden = !reason;
        badge.textContent = reason ?? "";
        row.tr.classList.toggle("refused", !!reason);
      }
    }
  }

  /** Put the rows in the watchlist's order, or the sort's (at most once a second, or `now`). */
  arrange(force) {
    this.sortedAt = performance.now();
    let symbols = this.order;
    if (this.sort) {
      const { key, dir } = this.sort;
      const value = (s) => this.sortValue(s, key);
      symbols = [...symbols].sort((a, b) => {
        const x = value(a);
        const y = value(b);
        if (typeof x === "string") return dir * x.localeCompare(y);
        return dir * ((Number.isFinite(x) ? x : -Infinity) - (Number.isFinite(y) ? y : -Infinity));
      });
    }
    const current = [...this.body.rows].map((tr) => tr.dataset.symbol);
    if (!force && current.length === symbols.length && current.every((s, k) => s === symbols[k])) return;
    for (const symbol of symbols) this.body.append(this.rows.get(symbol).tr);
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
      case "lost":
        return this.view.lost(symbol);
      default:
        return q?.[key];
    }
  }

  setSort(sort) {
    this.sort = sort;
    for (const th of this.table.tHead.rows[0].cells) {
      const on = sort && th.dataset.key === sort.key;
      if (SORTABLE.has(th.dataset.key)) {
        th.setAttribute("aria-sort", on ? (sort.dir > 0 ? "ascending" : "descending") : "none");
      }
    }
    this.arrange(true);
  }

  /** Click on a header: ascending, descending, then the watchlist's order. */
  cycleSort(key) {
    const s = this.sort;
    const next = !s || s.key !== key ? { key, dir: 1 } : s.dir > 0 ? { key, dir: -1 } : null;
    this.on.sort(next);
  }

  select(symbol) {
    if (this.selected && this.rows.has(this.selected)) this.rows.get(this.selected).tr.classList.remove("selected");
    this.selected = symbol;
    const row = symbol ? this.rows.get(symbol) : null;
    if (row) {
      row.tr.classList.add("selected");
      row.tr.scrollIntoView({ block: "nearest" });
    }
    this.on.select(symbol);
  }

  /** The symbols in the order shown. */
  shown() {
    return [...this.body.rows].map((tr) => tr.dataset.symbol);
  }

  listen() {
    const symbolOf = (event) => event.target.closest("tr")?.dataset.symbol;
    this.table.tHead.addEventListener("click", (event) => {
      const key = event.target.closest("th")?.dataset.key;
      if (SORTABLE.has(key)) this.cycleSort(key);
    });
    this.table.tHead.addEventListener("keydown", (event) => {
      const key = event.target.closest("th")?.dataset.key;
      if ((event.key === "Enter" || event.key === " ") && SORTABLE.has(key)) {
        event.preventDefault();
        this.cycleSort(key);
      }
    });
    this.body.addEventListener("click", (event) => {
      const symbol = symbolOf(event);
      if (!symbol) return;
      if (event.target.closest("button.remove")) this.on.remove(symbol);
      else if (!event.target.closest("select")) {
        this.select(symbol);
        this.body.focus({ preventScroll: true });
      }
    });
    this.body.addEventListener("change", (event) => {
      const symbol = symbolOf(event);
      if (symbol && event.target.matches("select.throttle")) this.on.throttle(symbol, Number(event.target.value));
    });
    this.body.addEventListener("keydown", (event) => this.key(event));
    this.body.addEventListener("dragstart", (event) => {
      event.dataTransfer.setData("text/plain", symbolOf(event) ?? "");
      event.dataTransfer.effectAllowed = "move";
    });
    this.body.addEventListener("dragover", (event) => event.preventDefault());
    this.body.addEventListener("drop", (event) => {
      event.preventDefault();
      const moved = event.dataTransfer.getData("text/plain");
      const target = symbolOf(event);
      if (moved && target && moved !== target) this.on.moveTo(moved, this.order.indexOf(target));
    });
  }

  key(event) {
    if (event.target !== this.body) return; // a row's own controls keep their keys
    const shown = this.shown();
    const at = shown.indexOf(this.selected);
    const go = (index) => {
      event.preventDefault();
      if (shown.length) this.select(shown[Math.max(0, Math.min(shown.length - 1, index))]);
    };
    if (event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
      event.preventDefault();
      if (this.selected) this.on.move(this.selected, event.key === "ArrowUp" ? -1 : 1);
    } else if (event.key === "ArrowDown") go(at + 1);
    else if (event.key === "ArrowUp") go(at - 1);
    else if (event.key === "Home") go(0);
    else if (event.key === "End") go(shown.length - 1);
    else if ((event.key === "Delete" || event.key === "Backspace") && this.selected) {
      event.preventDefault();
      const next = shown[at + 1] ?? shown[at - 1] ?? null;
      this.on.remove(this.selected);
      if (next) this.select(next);
    } else if (event.key === "t" && this.selected) {
      const values = fmt.THROTTLES.map(([ms]) => ms);
      const now = values.indexOf(this.view.throttle(this.selected));
      this.on.throttle(this.selected, values[(now + 1) % values.length]);
    }
  }

  /** Show `ms` in the throttle select of `symbol` (after a change made elsewhere). */
  showThrottle(symbol, ms) {
    const select = this.rows.get(symbol)?.cells.throttle.firstChild;
    if (select) select.value = String(ms);
  }
}
