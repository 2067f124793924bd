// The "Why" panel: a gradient map for the digit picked in the probability bars, optionally against
// another digit ("why 9 and not 4"), computed by the server from the model's layers
// (POST /v1/models/{m}/attribution). All three maps come in one answer; switching between them
// only redraws.

import { ABSOLUTE, drawSignedMap, linearScale, renderLegend, symlogScale } from "./colors.js";
import { clearCanvas, formatValue } from "./render.js";

const DESCRIPTIONS = {
  saliency: "the gradient: how much brightening each pixel would raise (red) or lower (blue) the score",
  gradient_x_input: "gradient × input: what each pixel's ink adds to (red) or takes from (blue) the score, to first order",
  hires_cam: "HiResCAM: the last conv layer's maps times their gradient, position by position, placed over the " +
    "input; red is evidence for, blue against. Summed, it is the part of the score that is linear in that layer",
  grad_cam: "Grad-CAM as published, signed: the last conv layer's maps weighted by their gradient averaged over " +
    "positions. These networks flatten that layer into a dense one, where the average can point away from the evidence " +
    "(HiResCAM does not)",
};

export class AttributionPanel {
  constructor({ canvas, legend, caption, method, versus, scale }) {
    Object.assign(this, { canvas, legend, caption, method, versus, scaleSelect: scale });
    this.response = null;
    this.method.addEventListener("change", () => this.redraw());
    this.scaleSelect.addEventListener("change", () => this.redraw());
  }

  /** The versus digit chosen (null: none). */
  get versusDigit() {
    return this.versus.value === "" ? null : Number(this.versus.value);
  }

  show(response) {
    this.response = response;
    this.redraw();
  }

  redraw() {
    const response = this.response;
    if (!response) return;
    const method = this.method.value;
    const map = response.maps[method];
    const scale = this.scaleSelect.value === "fitted" ? linearScale(map.max_abs, "logit") : symlogScale(ABSOLUTE.gradient);
    drawSignedMap(this.canvas, map.values, scale, { underlay: response.input ?? null });
    renderLegend(this.legend, scale, { negative: `against ${response.target}`, positive: `for ${response.target}` });
    const score = response.objective === "logit" ? "logit" : "p";
    const what = response.versus === null
      ? `${score}(${response.target})`
      : `${score}(${response.target}) − ${score}(${response.versus})`;
    const layer = method.endsWith("_cam") ? ` (${map.layer}, ${map.native.shape.join("×")}, resampled to 28×28)` : "";
    this.canvas.dataset.target = String(response.target);
    this.canvas.dataset.versus = response.versus === null ? "" : String(response.versus);
    this.canvas.dataset.method = method;
    this.canvas.dataset.maxAbs = String(map.max_abs);
    this.canvas.setAttribute("aria-label", `Why ${response.target}${response.versus === null ? "" : ` and not ${response.versus}`}: ${method} map`);
    this.caption.textContent =
      `Why ${response.target}${response.versus === null ? "" : ` and not ${response.versus}`}: ${DESCRIPTIONS[method]}${layer}; ` +
      `for ${what} = ${formatValue(response.value)}. Largest |value| ${formatValue(map.max_abs)}.` +
      (response.note ? ` ${response.note}` : "");
  }

  clear(message = "") {
    this.response = null;
    clearCanvas(this.canvas);
    delete this.canvas.dataset.target;
    this.legend.replaceChildren();
    this.caption.textContent = message;
  }
}
