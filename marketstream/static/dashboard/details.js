/**
 * The selected symbol's details beside its chart: name, kind and reference, its throttle
 * (also on phones, where the board hides that column), the size and time of its last
 * tick (columns narrow screens hide), the updates per second received,
 * its seq and epoch, and the accounting: lost, conflated, resets, reconnects recovered
 * or not. Buttons move the symbol in the watchlist and remove it (for touch screens).
 */
import * as fmt from "./format.js";
import { throttleSelect } from "./throttle-select.js";

export class Details {
  constructor(el, view, on) {
    this.el = el;
    this.view = view; // {info, quote, entry, rate, throttle, effective, reason}
    this.on = on; // {throttle(symbol, ms), move(symbol, delta), remove(symbol)}
    this.symbol = null;
    el.innerHTML = `
      <div class="ident"><strong class="d-symbol"></strong> <span class="d-name"></span> <span class="d-kind"></span></div>
      <label class="d-throttle">Throttle </label>
      <dl class="d-stats">
        <div><dt>Upd/s</dt><dd class="d-rate">–</dd></div>
        <div><dt>Reference</dt><dd class="d-reference">–</dd></div>
        <div><dt>Size</dt><dd class="d-size">–</dd></div>
        <div><dt>Last update</dt><dd class="d-time">–</dd></div>
        <div><dt>Seq</dt><dd class="d-seq">–</dd></div>
        <div><dt>Epoch</dt><dd class="d-epoch">–</dd></div>
        <div><dt>Lost</dt><dd class="d-lost">0</dd></div>
        <div><dt>Conflated</dt><dd class="d-conflated">0</dd></div>
        <div><dt>Resets</dt><dd class="d-resets">0</dd></div>
        <div><dt>Recovered</dt><dd class="d-recovered">0 / 0</dd></div>
      </dl>
      <div class="d-actions">
        <button type="button" class="d-up" title="Move up (Alt+↑)">↑</button>
        <button type="button" class="d-down" title="Move down (Alt+↓)">↓</button>
        <button type="button" class="d-remove" title="Remove (Delete)">Remove</button>
      </div>`;
    this.select = throttleSelect(0, "Throttle of the selected symbol");
    el.querySelector(".d-throttle").append(this.select);
    this.select.addEventListener("change", () => this.symbol && on.throttle(this.symbol, Number(this.select.value)));
    el.querySelector(".d-up").addEventListener("click", () => this.symbol && on.move(this.symbol, -1));
    el.querySelector(".d-down").addEventListener("click", () => this.symbol && on.move(this.symbol, 1));
    el.querySelector(".d-remove").addEventListener("click", () => this.symbol && on.remove(this.symbol));
  }

  show(symbol) {
    this.symbol = symbol;
    this.el.hidden = !symbol;
    if (!symbol) return;
    const info = this.view.info(symbol);
    this.text(".d-symbol", symbol);
    this.text(".d-name", info?.name ?? "");
    this.text(".d-kind", info?.kind ?? "");
    this.select.value = String(this.view.throttle(symbol));
    this.refresh();
  }

  text(selector, value) {
    const node = this.el.querySelector(selector);
    if (node.textContent !== value) node.textContent = value;
  }

  refresh() {
    const symbol = this.symbol;
    if (!symbol) return;
    const entry = this.view.entry(symbol);
    const quote = this.view.quote(symbol);
    const reference = this.view.info(symbol)?.reference;
    const effective = this.view.effective(symbol);
    const reason = this.view.reason(symbol);
    this.text(".d-rate", reason ?? fmt.rate(this.view.rate(symbol)));
    this.text(".d-reference", reference ? fmt.price(reference, quote?.decimals ?? 2) : "–");
    this.text(".d-size", quote ? fmt.size(quote.size) : "–");
    this.text(".d-time", quote ? fmt.time(quote.ts) : "–");
    this.text(".d-seq", entry?.seq != null ? String(entry.seq) : "–");
    this.text(".d-epoch", entry?.epoch ?? "–");
    this.text(".d-lost", String(entry?.lost ?? 0));
    this.text(".d-conflated", String(entry?.conflated ?? 0));
    this.text(".d-resets", String(entry?.resets ?? 0));
    this.text(".d-recovered", `${entry?.recovered ?? 0} / ${(entry?.recovered ?? 0) + (entry?.unrecovered ?? 0)}`);
    const wanted = this.view.throttle(symbol);
    this.select.title = effective != null && effective !== wanted ? `the hub applies ${effective} ms` : "";
  }
}
