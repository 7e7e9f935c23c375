/**
 * The header: the connection's status (live, connecting, reconnecting in N s, stopped and
 * why), the readouts (ping round trip, age of the ticks received, updates per second, lost
 * ticks, reconnects) and the key form, shown when the hub asks for a key.
 */
import * as fmt from "./format.js";

export class Header {
  constructor(els, on) {
    this.els = els; // {status, reconnect, rtt, age, rate, lost, reconnects, keyToggle, keyForm, key, keyForget, keyMessage}
    this.on = on; // {key(key), forgetKey(), reconnect()}
    this.status = { state: "connecting", text: "connecting…" };
    els.keyToggle.addEventListener("click", () => {
      if (els.keyForm.hidden) this.showKey("");
      else els.keyForm.hidden = true;
    });
    els.keyForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const key = els.key.value.trim();
      if (!key) return;
      els.key.value = "";
      this.els.keyForm.hidden = true;
      on.key(key);
    });
    els.keyForget.addEventListener("click", () => {
      els.key.value = "";
      on.forgetKey();
    });
    els.reconnect.addEventListener("click", () => on.reconnect());
  }

  showKey(message) {
    this.els.keyForm.hidden = false;
    this.els.keyMessage.textContent = message;
    this.els.key.focus();
  }

  setStatus(status) {
    this.status = status;
    this.drawStatus();
  }

  drawStatus() {
    const { state, text, until } = this.status;
    const el = this.els.status;
    let shown = text;
    if (state === "waiting" && until) shown = `${text}; reconnecting in ${Math.max(0, (until - Date.now()) / 1000).toFixed(1)} s`;
    if (el.textContent !== shown) el.textContent = shown;
    el.className = `status ${state}`;
    this.els.reconnect.hidden = state !== "stopped";
  }

  /** readouts: {rtt, age, rate, lost, reconnects} */
  refresh(readouts) {
    this.drawStatus();
    const put = (el, text) => {
      if (el.textContent !== text) el.textContent = text;
    };
    put(this.els.rtt, fmt.ms(readouts.rtt));
    put(this.els.age, fmt.ms(readouts.age));
    put(this.els.rate, fmt.rate(readouts.rate));
    put(this.els.lost, String(readouts.lost));
    put(this.els.reconnects, String(readouts.reconnects));
    this.els.lost.classList.toggle("neg", readouts.lost > 0);
  }
}
