// The "Occlusion" panel: where covering the input changes the probability of the digit picked in
// the bars (POST /v1/models/{m}/explain), on the absolute probability scale: a drop of 0.0003
// stays faint, a drop of 0.9 is saturated, whatever the map's own largest drop.

import { ABSOLUTE, drawSignedMap, renderLegend, symlogScale } from "./colors.js";
import { clearCanvas, formatPercent, formatValue } from "./render.js";

export class OcclusionPanel {
  constructor({ canvas, legend, caption, patch, stride }) {
    Object.assign(this, { canvas, legend, caption, patch, stride });
    for (const control of [patch, stride]) {
      control.addEventListener("input", () => { control.nextElementSibling.value = control.value; });
    }
  }

  options(target) {
    return { patch: Number(this.patch.value), stride: Number(this.stride.value), target };
  }

  show(response) {
    const scale = symlogScale(ABSOLUTE.probability);
    drawSignedMap(this.canvas, response.heatmap, scale, { underlay: response.input ?? null });
    renderLegend(this.legend, scale, { negative: "covering raises p", positive: "covering lowers p" });
    let largest = 0;
    for (const row of response.heatmap) for (const value of row) largest = Math.max(largest, Math.abs(value));
    Object.assign(this.canvas.dataset, {
      target: String(response.target), patch: String(response.patch), stride: String(response.stride), maxAbs: String(largest),
    });
    this.caption.textContent =
      `A black ${response.patch}×${response.patch} patch slides over the input (stride ${response.stride}); each pixel shows ` +
      `the mean drop of p(${response.target}) = ${formatPercent(response.probability)} when the patches over it are covered. ` +
      `Largest change ${formatValue(largest)}.` + (largest < 0.01 ? " The model stays confident wherever the patch sits." : "");
  }

  clear(message = "") {
    clearCanvas(this.canvas);
    delete this.canvas.dataset.target;
    this.legend.replaceChildren();
    this.caption.textContent = message;
  }
}
