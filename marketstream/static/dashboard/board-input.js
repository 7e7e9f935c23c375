/**
 * What the board does with the mouse and the keyboard: a click selects a row (and the chart
 * follows), × removes it, a header sorts, rows drag to a new place; with the rows focused,
 * ↑ ↓ Home End select, Alt+↑ ↓ move the selected row, Delete removes it, t changes its throttle.
 */
import { THROTTLES } from "./format.js";

export function listen(board) {
  const { body, head } = board;
  const symbolOf = (event) => event.target.closest(".row")?.dataset.symbol;
  const sortKey = (event) => event.target.closest(".cell.sortable")?.dataset.key;
  head.addEventListener("click", (event) => {
    const key = sortKey(event);
    if (key) board.cycleSort(key);
  });
  head.addEventListener("keydown", (event) => {
    const key = sortKey(event);
    if (key && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      board.cycleSort(key);
    }
  });
  body.addEventListener("click", (event) => {
    const symbol = symbolOf(event);
    if (!symbol) return;
    if (event.target.closest("button.remove")) board.on.remove(symbol);
    else if (!event.target.closest("select")) {
      board.select(symbol);
      body.focus({ preventScroll: true });
    }
  });
  body.addEventListener("change", (event) => {
    const symbol = symbolOf(event);
    if (symbol && event.target.matches("select.throttle")) board.on.throttle(symbol, Number(event.target.value));
  });
  body.addEventListener("keydown", (event) => key(board, event));
  body.addEventListener("dragstart", (event) => {
    event.dataTransfer.setData("text/plain", symbolOf(event) ?? "");
    event.dataTransfer.effectAllowed = "move";
  });
  body.addEventListener("dragover", (event) => event.preventDefault());
  body.addEventListener("drop", (event) => {
    event.preventDefault();
    const moved = event.dataTransfer.getData("text/plain");
    const target = symbolOf(event);
    if (moved && target && moved !== target) board.on.moveTo(moved, board.order.indexOf(target));
  });
}

function key(board, event) {
  if (event.target !== board.body) return; // a row's own controls keep their keys
  const shown = board.shown();
  const at = shown.indexOf(board.selected);
  const go = (index) => {
    event.preventDefault();
    if (shown.length) board.select(shown[Math.max(0, Math.min(shown.length - 1, index))]);
  };
  const selected = board.selected;
  if (event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
    event.preventDefault();
    if (selected) board.on.move(selected, event.key === "ArrowUp" ? -1 : 1);
  } else if (event.key === "ArrowDown") go(at + 1);
  else if (event.key === "ArrowUp") go(at - 1);
  else if (event.key === "Home") go(0);
  else if (event.key === "End") go(shown.length - 1);
  else if ((event.key === "Delete" || event.key === "Backspace") && selected) {
    event.preventDefault();
    const next = shown[at + 1] ?? shown[at - 1] ?? null;
    board.on.remove(selected);
    if (next) board.select(next);
  } else if (event.key === "t" && selected) {
    const values = THROTTLES.map(([ms]) => ms);
    const now = values.indexOf(board.view.throttle(selected));
    board.on.throttle(selected, values[(now + 1) % values.length]);
  }
}
