/** The throttle picker of a symbol: every tick, 100 ms, 250 ms or 1 s. */
import { THROTTLES } from "./format.js";

export function throttleSelect(value, label) {
  const select = document.createElement("select");
  select.className = "throttle";
  select.setAttribute("aria-label", label);
  for (const [ms, text] of THROTTLES) select.add(new Option(text, String(ms), false, ms === value));
  return select;
}
