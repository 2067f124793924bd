// The whole network on one strip, left to right in network order: each spatial layer as a mosaic
// of its channels' feature maps, each vector layer as a grid of its units, under each its value
// range. A layer is one tab stop: a listbox of its channels (arrow keys move, Enter inspects), or
// a slider over its units. Events: "inspect" with detail {layer, index}.

import { grayLegend } from "./colors.js";
import { element, formatValue, pngLevels, pngUrl } from "./render.js";

const GAP = 1;  // px between tiles (none between cells smaller than SMALL_CELL)
const SMALL_CELL = 4;
const LABELLED_UNITS = 10;  // a layer this small (the logits) is drawn as labelled bars

/** Columns, cell size and gap that fit `count` square cells into width x height. */
export function fitGrid(count, width, height) {
  let best = { columns: 1, cell: 0, gap: 0 };
  for (const gap of [GAP, 0]) {
    for (let columns = 1; columns <= count; columns += 1) {
      const rows = Math.ceil(count / columns);
      const cell = Math.floor(Math.min((width - gap * (columns - 1)) / columns, (height - gap * (rows - 1)) / rows));
      if (cell > best.cell && (gap === 0 || cell >= SMALL_CELL)) best = { columns, cell, gap };
    }
  }
  return { ...best, cell: Math.max(1, best.cell) };
}

class SpatialLayer {
  constructor(layer, onInspect) {
    this.layer = layer;
    const [channels, height, width] = layer.shape;
    this.columns = 1;
    this.active = 0;
    this.list = element("div", "mosaic", {
      role: "listbox", tabindex: "0", "data-testid": "feature-maps",
      "aria-label": `${layer.name}: ${channels} feature maps of ${height}×${width}; arrow keys move, Enter inspects`,
    });
    this.tiles = Array.from({ length: channels }, (_, channel) => {
      const tile = element("img", "tile", {
        role: "option", id: `map-${layer.name}-${channel}`, alt: "", "aria-selected": "false", draggable: "false",
        "aria-label": `${layer.name} channel ${channel}`, "data-channel": String(channel),
      });
      tile.addEventListener("click", () => { this.#activate(channel); onInspect(channel); });
      return tile;
    });
    this.list.append(...this.tiles);
    this.list.addEventListener("keydown", (event) => this.#key(event, onInspect));
    this.#activate(0);
  }

  #activate(channel) {
    this.tiles[this.active]?.classList.remove("active");
    this.active = channel;
    this.tiles[channel].classList.add("active");
    this.list.setAttribute("aria-activedescendant", this.tiles[channel].id);
  }

  #key(event, onInspect) {
    const last = this.tiles.length - 1;
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: this.columns, ArrowUp: -this.columns };
    if (event.key in moves) this.#activate(Math.max(0, Math.min(last, this.active + moves[event.key])));
    else if (event.key === "Home") this.#activate(0);
    else if (event.key === "End") this.#activate(last);
    else if (event.key === "Enter" || event.key === " ") onInspect(this.active);
    else return;
    event.preventDefault();
  }

  layout(width, height) {
    const { columns, cell } = fitGrid(this.tiles.length, width, height);  // the tiles' 1 px gap is CSS
    this.columns = columns;
    this.list.style.gridTemplateColumns = `repeat(${columns}, ${Math.max(2, cell)}px)`;
  }

  async show(data) {
    await Promise.all(data.channels.map((png, channel) => {
      const tile = this.tiles[channel];
      if (!tile) return null;
      tile.src = pngUrl(png);
      return tile.decode().catch(() => null);
    }));
  }

  reset() {
    for (const tile of this.tiles) tile.removeAttribute("src");
  }

  mark(index) {
    this.tiles.forEach((tile, channel) => tile.setAttribute("aria-selected", String(channel === index)));
    if (index !== null && index < this.tiles.length) this.#activate(index);
  }
}

class VectorLayer {
  constructor(layer, onInspect) {
    this.layer = layer;
    this.units = layer.shape[0];
    this.values = null;
    this.range = null;
    this.grid = { columns: 1, cell: 4, gap: GAP };
    this.labelled = this.units <= LABELLED_UNITS;
    this.active = 0;
    this.marked = null;
    this.focused = false;
    this.canvas = element("canvas", "units", {
      role: "slider", tabindex: "0", "data-testid": "units", "aria-valuemin": "0", "aria-valuemax": String(this.units - 1),
      "aria-label": `${layer.name}: ${this.units} units; arrow keys pick one, Enter inspects it`,
    });
    this.canvas.addEventListener("click", (event) => {
      const rect = this.canvas.getBoundingClientRect();
      const { columns, cell, gap } = this.grid;
      const column = Math.floor(((event.clientX - rect.left) / rect.width) * this.canvas.width / (cell + gap));
      const row = Math.floor(((event.clientY - rect.top) / rect.height) * this.canvas.height / (cell + gap));
      const unit = this.labelled ? row : row * columns + Math.min(column, columns - 1);
      if (unit >= 0 && unit < this.units) { this.#activate(unit); onInspect(unit); }
    });
    for (const [type, on] of [["focus", true], ["blur", false]]) {
      this.canvas.addEventListener(type, () => { this.focused = on; this.#draw(); });
    }
    this.canvas.addEventListener("keydown", (event) => {
      const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: this.grid.columns, ArrowUp: -this.grid.columns,
                      PageDown: 10 * this.grid.columns, PageUp: -10 * this.grid.columns };
      if (event.key in moves) this.#activate(Math.max(0, Math.min(this.units - 1, this.active + moves[event.key])));
      else if (event.key === "Home") this.#activate(0);
      else if (event.key === "End") this.#activate(this.units - 1);
      else if (event.key === "Enter" || event.key === " ") onInspect(this.active);
      else return;
      event.preventDefault();
    });
    this.#activate(0);
  }

  #activate(unit) {
    this.active = unit;
    this.canvas.setAttribute("aria-valuenow", String(unit));
    const value = this.values && this.range ? ` ≈ ${formatValue(this.#value(unit))}` : "";
    this.canvas.setAttribute("aria-valuetext", `${this.layer.name} unit ${unit}${value}`);
    this.#draw();
  }

  #value(unit) {
    return this.range.min + (this.values[unit] / 255) * (this.range.max - this.range.min);
  }

  layout(width, height) {
    if (this.labelled) {
      const cell = Math.max(8, Math.min(22, Math.floor(height / this.units) - GAP));
      this.grid = { columns: 1, cell, gap: GAP };
      this.canvas.width = Math.max(40, Math.floor(width));
      this.canvas.height = this.units * (cell + GAP) - GAP;
    } else {
      this.grid = fitGrid(this.units, width, height);
      const rows = Math.ceil(this.units / this.grid.columns);
      const step = this.grid.cell + this.grid.gap;
      this.canvas.width = this.grid.columns * step - this.grid.gap;
      this.canvas.height = rows * step - this.grid.gap;
    }
    this.#draw();
  }

  async show(data) {
    const { levels } = await pngLevels(data.channels[0]);
    this.values = levels;
    this.range = { min: data.min, max: data.max };
    this.#activate(this.active);
  }

  reset() {
    this.values = null;
    this.#draw();
  }

  mark(index) {
    this.marked = index;
    if (index !== null && index < this.units) this.#activate(index);
    else this.#draw();
  }

  #draw() {
    const ctx = this.canvas.getContext("2d");
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (this.labelled) this.#drawBars(ctx);
    else this.#drawCells(ctx);
    if (this.values) this.canvas.dataset.drawn = "true";
    else delete this.canvas.dataset.drawn;
  }

  /** The logits: a signed bar per digit around zero, labelled, with its value (≈: from 8 bits). */
  #drawBars(ctx) {
    const { cell, gap } = this.grid;
    const width = this.canvas.width;
    const label = 10;
    const text = 32;
    const track = width - label - text;
    const low = this.range ? Math.min(0, this.range.min) : 0;
    const high = this.range ? Math.max(0, this.range.max) : 1;
    const toX = (value) => label + ((value - low) / (high - low || 1)) * track;
    const style = getComputedStyle(this.canvas);
    ctx.font = `${Math.min(11, cell)}px system-ui, sans-serif`;
    ctx.textBaseline = "middle";
    for (let unit = 0; unit < this.units; unit += 1) {
      const y = unit * (cell + gap);
      ctx.fillStyle = style.color;
      ctx.fillText(String(unit), 0, y + cell / 2);
      if (!this.values) continue;
      const value = this.#value(unit);
      ctx.fillStyle = value >= 0 ? "rgb(178 24 43)" : "rgb(33 102 172)";
      const [from, to] = [toX(Math.min(0, value)), toX(Math.max(0, value))];
      ctx.fillRect(from, y + 1, Math.max(1, to - from), cell - 2);
      ctx.fillStyle = style.color;
      ctx.textAlign = "right";
      ctx.fillText(formatValue(value), width - 1, y + cell / 2);
      ctx.textAlign = "left";
    }
    ctx.fillStyle = "#888";
    ctx.fillRect(toX(0), 0, 1, this.canvas.height);
    for (const [unit, color] of this.#outlined()) {
      ctx.strokeStyle = color;
      ctx.strokeRect(0.5, unit * (cell + gap) + 0.5, label + track, cell - 1);
    }
  }

  /** The inspected unit, and the keyboard's cursor while the layer has the focus. */
  #outlined() {
    const marks = this.marked === null || this.marked === undefined ? [] : [[this.marked, "#f59e0b"]];
    return this.focused ? [...marks, [this.active, "#2563eb"]] : marks;
  }

  #drawCells(ctx) {
    const { columns, cell, gap } = this.grid;
    const step = cell + gap;
    for (let unit = 0; unit < this.units; unit += 1) {
      const level = this.values ? this.values[unit] : 40;
      ctx.fillStyle = `rgb(${level} ${level} ${level})`;
      ctx.fillRect((unit % columns) * step, Math.floor(unit / columns) * step, cell, cell);
    }
    for (const [unit, color] of this.#outlined()) {
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.5;
      ctx.strokeRect((unit % columns) * step - 0.5, Math.floor(unit / columns) * step - 0.5, cell + 1, cell + 1);
    }
  }
}

export class NetworkView extends EventTarget {
  /** @type {Map<string, {view: SpatialLayer|VectorLayer, root: HTMLElement, legend: HTMLElement}>} */
  #columns = new Map();

  constructor(container) {
    super();
    this.container = container;
    new ResizeObserver(() => this.layout()).observe(container);
  }

  setModel(info) {
    this.#columns = new Map(info.layers.map((layer) => {
      const root = element("div", "layer", { "data-layer": layer.name, "data-kind": layer.kind });
      const head = element("div", "layer-head");
      const name = element("span", "layer-name");
      name.textContent = layer.name;
      const shape = element("span", "layer-shape");
      shape.textContent = layer.shape.join("×");
      head.append(name, shape);
      const inspect = (index) => this.dispatchEvent(new CustomEvent("inspect", { detail: { layer: layer.name, index } }));
      const view = layer.shape.length === 3 ? new SpatialLayer(layer, inspect) : new VectorLayer(layer, inspect);
      const body = element("div", "layer-body");
      body.append(view.list ?? view.canvas);
      const legend = element("div", "layer-legend", { "data-testid": "layer-range" });
      root.append(head, body, legend);
      return [layer.name, { view, root, body, legend }];
    }));
    this.container.replaceChildren(...[...this.#columns.values()].map(({ root }) => root));
    this.layout();
  }

  layout() {
    for (const { view, body } of this.#columns.values()) {
      const width = body.clientWidth;
      const height = body.clientHeight;
      if (width > 0 && height > 0) view.layout(width, height);
    }
  }

  /** An activations response's layers (encoding=png); resolves when every layer is drawn. */
  async show(layers) {
    await Promise.all(layers.map(async (entry) => {
      const column = this.#columns.get(entry.name);
      if (!column) return;
      await column.view.show(entry.data);
      column.legend.replaceChildren(grayLegend(entry.data.min, entry.data.max));
      column.root.dataset.min = String(entry.data.min);
      column.root.dataset.max = String(entry.data.max);
    }));
  }

  reset() {
    for (const { view, legend, root } of this.#columns.values()) {
      view.reset();
      legend.replaceChildren();
      delete root.dataset.min;
      delete root.dataset.max;
    }
  }

  /** Mark the inspected unit (null: none). */
  mark(layerName, index) {
    for (const [name, { view, root }] of this.#columns) {
      view.mark(name === layerName ? index : null);
      root.classList.toggle("inspected", name === layerName);
    }
  }
}
