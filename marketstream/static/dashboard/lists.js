/** The named watchlists' controls: pick one, rename it, make a new one, delete it. */

export class ListControls {
  constructor(els, watchlists) {
    this.els = els; // {select, name, create, drop}
    this.watchlists = watchlists;
    els.select.addEventListener("change", () => watchlists.select(Number(els.select.value)));
    els.name.addEventListener("change", () => watchlists.rename(els.name.value));
    els.name.addEventListener("keydown", (event) => {
      if (event.key === "Enter") els.name.blur();
    });
    els.create.addEventListener("click", () => {
      watchlists.create(this.freeName());
      els.name.focus();
      els.name.select();
    });
    els.drop.addEventListener("click", () => watchlists.drop());
  }

  freeName() {
    const names = new Set(this.watchlists.lists.map((l) => l.name));
    let n = this.watchlists.lists.length + 1;
    while (names.has(`List ${n}`)) n += 1;
    return `List ${n}`;
  }

  draw() {
    const { select, name, drop } = this.els;
    const lists = this.watchlists.lists;
    select.replaceChildren(...lists.map((l, k) => new Option(`${l.name} (${l.symbols.length})`, String(k))));
    select.value = String(this.watchlists.state.active);
    if (document.activeElement !== name) name.value = this.watchlists.current?.name ?? "";
    drop.disabled = lists.length < 2;
  }
}
