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

/** GET /v1/models: {default_model, models: [ModelInfo, ...]} */
export function listModels() {
  return requestJson("/v1/models");
}

/**
 * POST /v1/models/{name}/activations?encoding=png: prediction, the preprocessed input and every
 * layer's output (one grayscale PNG per channel, stats with a histogram).
 * @param {string} model
 * @param {string} imageBase64 an encoded image (PNG, JPEG, ...) in base64
 */
export function activations(model, imageBase64) {
  return requestJson(`/v1/models/${path(model)}/activations${query({ encoding: "png" })}`,
    { method: "POST", body: { image_base64: imageBase64 } });
}

/** POST /v1/models/{name}/predict with one encoded image: {model, version, predictions: [...]} */
export function predict(model, imageBase64) {
  return requestJson(`/v1/models/${path(model)}/predict`, { method: "POST", body: { image_base64: imageBase64 } });
}

/**
 * POST /v1/models/{name}/explain: occlusion sensitivity of p(target).
 * @param {{patch: number, stride: number, target: number|null}} options target null: the predicted class
 */
export function explain(model, imageBase64, { patch, stride, target }) {
  return requestJson(`/v1/models/${path(model)}/explain${query({ patch, stride, target })}`,
    { method: "POST", body: { image_base64: imageBase64 } });
}

/** GET /v1/models/{name}/versions/{v}/layers/{layer}/weights?encoding=png */
export function layerWeights(model, version, layer) {
  return requestJson(
    `/v1/models/${path(model)}/versions/${path(version)}/layers/${path(layer)}/weights${query({ encoding: "png" })}`);
}
