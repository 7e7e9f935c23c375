/**
 * The search box: finds symbols of the catalog by symbol or name as one types; Enter or a
 * click adds the highlighted one to the watchlist. Arrow keys move the highlight, Escape
 * closes. "/" anywhere on the page focuses it.
 */

export class Search {
  /** catalog: Catalog; has(symbol): in the watchlist; add(symbol). */
  constructor(input, list, catalog, has, add) {
    Object.assign(this, { input, list, catalog, has, add });
    this.found = [];
    this.active = 0;
    input.addEventListener("input", () => this.update());
    input.addEventListener("keydown", (event) => this.key(event));
    input.addEventListener("blur", () => setTimeout(() => this.close(), 150));
    list.addEventListener("mousedown", (event) => event.preventDefault()); // keep the focus in the box
    list.addEventListener("click", (event) => {
      const symbol = event.target.closest("li")?.dataset.symbol;
      if (symbol) this.choose(symbol);
    });
    document.addEventListener("keydown", (event) => {
      const typing = event.target.closest("input, select, textarea");
      if (event.key === "/" && !typing) {
        event.preventDefault();
        input.focus();
      }
    });
  }

  update() {
    this.found = this.catalog.search(this.input.value);
    this.active = 0;
    this.draw();
  }

  draw() {
    this.list.replaceChildren(
      ...this.found.map((entry, k) => {
        const li = document.createElement("li");
        li.id = `result-${k}`;
        li.role = "option";
        li.dataset.symbol = entry.symbol;
        li.setAttribute("aria-selected", String(k === this.active));
        const added = this.has(entry.symbol);
        li.innerHTML = '<span class="sym"></span><span class="name"></span><span class="kind"></span><span class="add"></span>';
        li.children[0].textContent = entry.symbol;
        li.children[1].textContent = entry.name ?? "";
        li.children[2].textContent = entry.kind ?? "";
        li.children[3].textContent = added ? "added" : "add";
        li.classList.toggle("added", added);
        return li;
      }),
    );
    const open = this.found.length > 0;
    this.list.hidden = !open;
    this.input.setAttribute("aria-expanded", String(open));
    if (open) this.input.setAttribute("aria-activedescendant", `result-${this.active}`);
    else this.input.removeAttribute("aria-activedescendant");
  }

  key(event) {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (!this.found.length) return;
      const step = event.key === "ArrowDown" ? 1 : -1;
      this.active = (this.active + step + this.found.length) % this.found.length;
      this.draw();
    } else if (event.key === "Enter") {
      event.preventDefault();
      const entry = this.found[this.active];
      if (entry) this.choose(entry.symbol);
    } else if (event.key === "Escape") {
      this.input.value = "";
      this.close();
    }
  }

  choose(symbol) {
    this.add(symbol);
    this.input.value = "";
    this.close();
  }

  close() {
    this.found = [];
    this.draw();
  }
}
