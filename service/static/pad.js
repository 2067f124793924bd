// The drawing pad: strokes from Pointer Events (mouse, pen, touch), undo, clear, and an uploaded
// image as a base layer. It knows nothing of the service; it says "change" and hands out its image.

const DARK = "#000000";
const LIGHT = "#ffffff";
const MAX_COMPOSITE_SIDE = 1024;  // strokes over an upload are drawn into a copy of it at most this big

/** Mean luminance (0..255) of the border pixels of an image: its background, for a digit. */
function borderLuminance(bitmap) {
  const size = 32;
  const canvas = new OffscreenCanvas(size, size);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0, size, size);
  const { data } = ctx.getImageData(0, 0, size, size);
  let sum = 0;
  let count = 0;
  for (let y = 0; y < size; y += 1) {
    for (let x = 0; x < size; x += 1) {
      if (x !== 0 && y !== 0 && x !== size - 1 && y !== size - 1) continue;
      const i = (y * size + x) * 4;
      const alpha = data[i + 3] / 255;  // transparent counts as the pad's black
      sum += alpha * (0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2]);
      count += 1;
    }
  }
  return sum / count;
}

function readAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(reader.error ?? new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

/**
 * Events: "change" with detail {reason: "draw" | "stroke-end" | "undo" | "clear" | "upload"}.
 * An upload replaces everything; strokes drawn over it use the ink that contrasts with its background.
 */
export class DrawingPad extends EventTarget {
  /** @type {Array<{kind: "stroke", points: number[][], color: string} | {kind: "image", bitmap: ImageBitmap|null, base64: string, name: string}>} */
  #items = [];
  #activeStroke = null;
  #activePointer = null;
  #background = DARK;
  #ink = LIGHT;

  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{lineWidth?: number}} options line width in canvas pixels
   */
  constructor(canvas, { lineWidth = 22 } = {}) {
    super();
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.lineWidth = lineWidth;
    canvas.addEventListener("pointerdown", (event) => this.#onDown(event));
    canvas.addEventListener("pointermove", (event) => this.#onMove(event));
    canvas.addEventListener("pointerup", (event) => this.#onUp(event));
    canvas.addEventListener("pointercancel", (event) => this.#onUp(event));
    canvas.addEventListener("lostpointercapture", (event) => this.#onUp(event));
    this.#redraw();
  }

  get isEmpty() {
    return this.#items.length === 0;
  }

  get canUndo() {
    return this.#items.length > 0;
  }

  /** The uploaded file's name when the pad shows an upload and nothing drawn over it. */
  get uploadName() {
    const [first] = this.#items;
    return this.#items.length === 1 && first.kind === "image" ? first.name : null;
  }

  clear() {
    this.#items = [];
    this.#endStroke();
    this.#setColors(DARK);
    this.#redraw();
    this.#emit("clear");
  }

  undo() {
    if (!this.#items.length) return;
    this.#endStroke();
    const removed = this.#items.pop();
    if (removed.kind === "image") this.#setColors(DARK);
    this.#redraw();
    this.#emit("undo");
  }

  /**
   * Make an image file the pad's input. The file's own bytes go to the service (it decodes more
   * formats than a browser does); the pad shows it when the browser can decode it.
   * @param {File} file
   */
  async loadFile(file) {
    const base64 = await readAsBase64(file);
    let bitmap = null;
    try {
      bitmap = await createImageBitmap(file);
    } catch {
      bitmap = null;
    }
    this.#endStroke();
    this.#items = [{ kind: "image", bitmap, base64, name: file.name }];
    this.#setColors(bitmap && borderLuminance(bitmap) > 127 ? LIGHT : DARK);
    this.#redraw();
    this.#emit("upload");
  }

  /**
   * The pad's input as base64: an upload alone is sent as its file; strokes over an upload are
   * drawn into the upload at its own aspect (not the pad's letterboxed square, whose bars would be
   * taken for paper or ink); a drawing alone as a PNG of the pad.
   */
  encode() {
    const [first] = this.#items;
    if (this.#items.length === 1 && first.kind === "image") return first.base64;
    const canvas = first?.kind === "image" && first.bitmap ? this.#overUpload(first.bitmap) : this.canvas;
    return canvas.toDataURL("image/png").replace(/^data:[^,]*,/, "");
  }

  #overUpload(bitmap) {
    const size = Math.min(1, MAX_COMPOSITE_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * size));
    canvas.height = Math.max(1, Math.round(bitmap.height * size));
    const ctx = canvas.getContext("2d");
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    const { scale, left, top } = this.#letterbox(bitmap);
    const factor = canvas.width / (bitmap.width * scale);  // pad pixels -> composite pixels
    for (const item of this.#items) {
      if (item.kind !== "stroke") continue;
      const points = item.points.map(([x, y]) => [(x - left) * factor, (y - top) * factor]);
      this.#drawStroke(ctx, { points, color: item.color }, this.lineWidth * factor);
    }
    return canvas;
  }

  /** Where the pad shows an upload: scaled to fit, centred. */
  #letterbox(bitmap) {
    const scale = Math.min(this.canvas.width / bitmap.width, this.canvas.height / bitmap.height);
    return { scale, left: (this.canvas.width - bitmap.width * scale) / 2, top: (this.canvas.height - bitmap.height * scale) / 2 };
  }

  #setColors(background) {
    this.#background = background;
    this.#ink = background === DARK ? LIGHT : DARK;
  }

  #emit(reason) {
    this.dispatchEvent(new CustomEvent("change", { detail: { reason } }));
  }

  #point(event) {
    const rect = this.canvas.getBoundingClientRect();
    return [
      ((event.clientX - rect.left) / rect.width) * this.canvas.width,
      ((event.clientY - rect.top) / rect.height) * this.canvas.height,
    ];
  }

  #onDown(event) {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    if (this.#activePointer !== null) return;  // one stroke at a time: a second finger is ignored
    event.preventDefault();
    this.canvas.setPointerCapture?.(event.pointerId);
    const [first] = this.#items;
    if (first?.kind === "image" && first.bitmap === null) {
      this.#items = [];  // an upload the browser cannot show cannot be drawn over
      this.#setColors(DARK);
    }
    this.#activePointer = event.pointerId;
    this.#activeStroke = { kind: "stroke", points: [this.#point(event)], color: this.#ink };
    this.#items.push(this.#activeStroke);
    this.#redraw();
    this.#emit("draw");
  }

  #onMove(event) {
    if (event.pointerId !== this.#activePointer || !this.#activeStroke) return;
    event.preventDefault();
    const events = event.getCoalescedEvents?.() ?? [];
    for (const sample of events.length ? events : [event]) this.#activeStroke.points.push(this.#point(sample));
    this.#redraw();
    this.#emit("draw");
  }

  #onUp(event) {
    if (event.pointerId !== this.#activePointer) return;
    this.#endStroke();
    this.#emit("stroke-end");
  }

  #endStroke() {
    if (this.#activePointer !== null) this.canvas.releasePointerCapture?.(this.#activePointer);
    this.#activePointer = null;
    this.#activeStroke = null;
  }

  #redraw() {
    const { ctx, canvas } = this;
    ctx.fillStyle = this.#background;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (const item of this.#items) {
      if (item.kind === "image") this.#drawImage(item.bitmap);
      else this.#drawStroke(this.ctx, item, this.lineWidth);
    }
  }

  #drawImage(bitmap) {
    if (!bitmap) return;
    const { scale, left, top } = this.#letterbox(bitmap);
    this.ctx.drawImage(bitmap, left, top, bitmap.width * scale, bitmap.height * scale);
  }

  #drawStroke(ctx, { points, color }, lineWidth) {
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = lineWidth;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    if (points.length === 1) {
      ctx.beginPath();
      ctx.arc(points[0][0], points[0][1], lineWidth / 2, 0, Math.PI * 2);
      ctx.fill();
      return;
    }
    ctx.beginPath();
    ctx.moveTo(points[0][0], points[0][1]);
    for (const [x, y] of points.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }
}
