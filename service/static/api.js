// The service's HTTP API as the page uses it. Every failure becomes an ApiError whose message
// can be shown to the user as it is: the server's {"error": "..."} text, or that it is unreachable.

export class ApiError extends Error {
  /**
   * @param {string} message what to show the user
   * @param {{status?: number, unreachable?: boolean}} details HTTP status (0 when none came back)
   */
  constructor(message, { status = 0, unreachable = false } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.unreachable = unreachable;
  }
}

const path = encodeURIComponent;

function errorDetail(payload, text, response) {
  if (payload && typeof payload.error === "string") return payload.error;
  const snippet = text.trim().slice(0, 200);
  return snippet || response.statusText || "no details";
}

/**
 * One JSON request. Resolves with the parsed body of a 2xx answer; rejects with ApiError otherwise.
 * @param {string} url
 * @param {{method?: string, body?: unknown}} options
 */
async function requestJson(url, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  let text;
  try {
    response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    text = await response.text();
  } catch (error) {
    throw new ApiError(`The service is unreachable (${error.message}). Is mnist-serve running?`, { unreachable: true });
  }
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (!response.ok) {
    throw new ApiError(`The service answered ${response.status}: ${errorDetail(payload, text, response)}`,
      { status: response.status });
  }
  if (payload === null) {
    throw new ApiError(`The service sent an answer that is not JSON (${method} ${url}).`, { status: response.status });
  }
  return payload;
}

function query(params) {
  const entries = Object.entries(params).filter(([, value]) => value !== null && value !== undefined && value !== "");
  return entries.length ? `?${new URLSearchParams(entries.map(([k, v]) => [k, String(v)]))}` : "";
}

/** GET /v1/models: {default_model, models: [ModelInfo, ...]} (the latest version of each) */
export function listModels() {
  return requestJson("/v1/models");
}

/** The path of a model version: /v1/models/{name}/versions/{version}. */
function modelPath({ name, version }) {
  return `/v1/models/${path(name)}/versions/${path(version)}`;
}

/** GET /v1/models/{name}/versions/{v}: that version's ModelInfo. */
export function describe(ref) {
  return requestJson(modelPath(ref));
}

const imageBody = (imageBase64) => ({ image_base64: imageBase64 });

/**
 * POST .../activations?encoding=png: prediction, the preprocessed input and every layer's output
 * (one grayscale PNG per channel over the layer's min..max).
 * @param {{name: string, version: number}} ref
 * @param {string} imageBase64 an encoded image (PNG, JPEG, ...) in base64
 */
export function activations(ref, imageBase64) {
  return requestJson(`${modelPath(ref)}/activations${query({ encoding: "png" })}`, { method: "POST", body: imageBody(imageBase64) });
}

/** POST .../attribution: saliency, gradient x input and Grad-CAM maps for `target` (null: predicted). */
export function attribution(ref, imageBase64, { target, versus }) {
  return requestJson(`${modelPath(ref)}/attribution${query({ target, versus })}`, { method: "POST", body: imageBody(imageBase64) });
}

/** POST .../inspect?layer=&unit=[&at=y,x]: one unit's values, kernels, receptive field, contributions. */
export function inspect(ref, imageBase64, { layer, unit, y = null, x = null }) {
  const at = y === null || x === null ? null : `${y},${x}`;
  return requestJson(`${modelPath(ref)}/inspect${query({ layer, unit, at })}`, { method: "POST", body: imageBody(imageBase64) });
}

/** POST .../input-check: the preprocessing steps and warnings about the input. */
export function inputCheck(ref, imageBase64) {
  return requestJson(`${modelPath(ref)}/input-check`, { method: "POST", body: imageBody(imageBase64) });
}

/** POST /v1/compare?models=a:v,b:v: two models of one architecture on one input. */
export function compare(refs, imageBase64, { target }) {
  const models = refs.map(({ name, version }) => `${name}:${version}`).join(",");
  return requestJson(`/v1/compare${query({ models, target })}`, { method: "POST", body: imageBody(imageBase64) });
}

/**
 * POST .../explain: occlusion sensitivity of p(target).
 * @param {{patch: number, stride: number, target: number|null}} options target null: the predicted class
 */
export function explain(ref, imageBase64, { patch, stride, target }) {
  return requestJson(`${modelPath(ref)}/explain${query({ patch, stride, target })}`, { method: "POST", body: imageBody(imageBase64) });
}
