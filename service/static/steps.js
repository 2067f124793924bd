// Honest input: what the server's preprocessing did (POST /v1/models/{m}/input-check): the ink it
// found, the box it cropped, the 20-pixel scaling, the centre-of-mass shift; and its warnings
// when the input is blank or unlike a digit (shown next to the prediction, never instead of it).

import { drawGrayscale, element, formatValue } from "./render.js";

const SIZE = 28;

function thumbnail(rows, label, draw = null) {
  const canvas = element("canvas", "step-image", { role: "img", "aria-label": label });
  drawGrayscale(canvas, rows);
  if (draw) {
    const scaled = element("canvas", "step-image", { role: "img", "aria-label": label, width: "84", height: "84" });
    const ctx = scaled.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(canvas, 0, 0, 84, 84);
    draw(ctx, 84 / rows[0].length, 84 / rows.length);
    scaled.dataset.drawn = "true";
    return scaled;
  }
  return canvas;
}

function step(image, caption) {
  const item = element("li", "step");
  const text = element("span", "step-caption");
  text.textContent = caption;
  item.append(image, text);
  return item;
}

/** The 28x28 input before its centre-of-mass shift (the shift was np.roll by (dy, dx)). */
function unshifted(input, dy, dx) {
  return input.map((_, y) => input[0].map((__, x) => input[(y + dy + SIZE) % SIZE][(x + dx + SIZE) % SIZE]));
}

export class StepsView {
  constructor(list, warnings) {
    this.list = list;
    this.warnings = warnings;
  }

  clear() {
    this.list.replaceChildren();
    this.warnings.replaceChildren();
    delete this.warnings.dataset.codes;
  }

  show(check) {
    this.showWarnings(check.warnings);
    if (!check.crop) {
      this.list.replaceChildren(step(thumbnail(check.input, "blank input"), "no ink found"));
      return;
    }
    const { crop, ink, shift } = check;
    const inkScaleY = ink.rows.length / check.working.height;
    const inkScaleX = ink.rows[0].length / check.working.width;
    const found = thumbnail(ink.rows, "the ink the server found, with the box it cropped", (ctx, sx, sy) => {
      ctx.strokeStyle = "#f59e0b";
      ctx.lineWidth = 2;
      ctx.strokeRect(crop.left * inkScaleX * sx, crop.top * inkScaleY * sy,
        (crop.right - crop.left + 1) * inkScaleX * sx, (crop.bottom - crop.top + 1) * inkScaleY * sy);
    });
    const before = unshifted(check.input, shift.dy, shift.dx);
    const placed = thumbnail(before, "the digit scaled into a 20-pixel box, with its centre of mass", (ctx, sx, sy) => {
      ctx.fillStyle = "#f59e0b";
      ctx.beginPath();
      ctx.arc((check.centre_of_mass.x + 0.5) * sx, (check.centre_of_mass.y + 0.5) * sy, 3, 0, Math.PI * 2);
      ctx.fill();
    });
    const centred = thumbnail(check.input, "the digit moved so that its centre of mass is at the centre", (ctx, sx, sy) => {
      ctx.strokeStyle = "#f59e0b";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(14 * sx, 10 * sy); ctx.lineTo(14 * sx, 18 * sy);
      ctx.moveTo(10 * sx, 14 * sy); ctx.lineTo(18 * sx, 14 * sy);
      ctx.stroke();
    });
    const cropSize = `${crop.right - crop.left + 1}×${crop.bottom - crop.top + 1}`;
    this.list.replaceChildren(
      step(found, `ink${check.uneven_light ? " (uneven light)" : ""}; crop ${cropSize} px`),
      step(placed, `×${formatValue(check.scale)} into 20 px`),
      step(centred, `moved ${shift.dy >= 0 ? "+" : ""}${shift.dy}, ${shift.dx >= 0 ? "+" : ""}${shift.dx}`),
    );
  }

  showWarnings(warnings) {
    this.warnings.replaceChildren(...warnings.map(({ code, message }) => {
      const line = element("span", "warning", { "data-code": code });
      line.textContent = `⚠ ${message}`;
      return line;
    }));
    this.warnings.dataset.codes = warnings.map(({ code }) => code).join(" ");
  }
}
