// A tablist (WAI-ARIA tabs pattern): one tab stop, arrow keys move between tabs and select them.
// Events: "change" with detail {panel} (the data-panel of the selected tab).

export class Tabs extends EventTarget {
  /** @param {HTMLElement} tablist */
  constructor(tablist) {
    super();
    this.tabs = [...tablist.querySelectorAll("[role=tab]")];
    for (const tab of this.tabs) {
      tab.addEventListener("click", () => this.select(tab.dataset.panel));
      tab.addEventListener("keydown", (event) => this.#key(event, tab));
    }
  }

  get selected() {
    return this.tabs.find((tab) => tab.getAttribute("aria-selected") === "true")?.dataset.panel ?? null;
  }

  select(panel, { focus = false } = {}) {
    const previous = this.selected;
    for (const tab of this.tabs) {
      const on = tab.dataset.panel === panel;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      document.getElementById(tab.getAttribute("aria-controls")).hidden = !on;
      if (on && focus) tab.focus();
    }
    if (panel !== previous) this.dispatchEvent(new CustomEvent("change", { detail: { panel, previous } }));
  }

  #key(event, tab) {
    const index = this.tabs.indexOf(tab);
    const moves = { ArrowRight: 1, ArrowLeft: -1 };
    let next = null;
    if (event.key in moves) next = (index + moves[event.key] + this.tabs.length) % this.tabs.length;
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = this.tabs.length - 1;
    if (next === null) return;
    event.preventDefault();
    this.select(this.tabs[next].dataset.panel, { focus: true });
  }
}
