// The detail panels behind the tabs: what each fetches for the current input, where its answer
// goes, and how it is emptied. `kind` names the request (its errors and its freshness).

import * as api from "./api.js";
import { counterpart } from "./compare.js";

/**
 * @param {object} deps
 * @param {object} deps.state the page's state (models, model, unit, input, layerPngs)
 * @param {() => boolean} deps.hasInput a model is selected and the pad holds something
 * @param {(kind: string, request: () => Promise<object>, apply: (r: object) => unknown, clear: (m: string) => void) => Promise<boolean>} deps.fetchFresh
 * @param {(send: (model: object, image: string) => Promise<object>) => () => Promise<object>} deps.requestFor
 * @param {() => number|null} deps.explained the digit the maps explain
 * @param {{attribution: object, inspector: object, comparison: object, occlusion: object}} deps.views
 */
export function makePanels({ state, hasInput, fetchFresh, requestFor, explained, views }) {
  const { attribution, inspector, comparison, occlusion } = views;
  return {
    why: {
      kind: "attribution",
      load: () => hasInput() && fetchFresh("attribution", requestFor((model, image) => {
        const versus = attribution.versusDigit === explained() ? null : attribution.versusDigit;
        return api.attribution(model, image, { target: explained(), versus });
      }), (response) => attribution.show(response), (message) => attribution.clear(message)),
      clear: (message) => attribution.clear(message),
    },
    unit: {
      kind: "inspect",
      load: () => hasInput() && state.unit && fetchFresh("inspect", requestFor((model, image) => api.inspect(model, image, state.unit)),
        (response) => inspector.show(response, { input: state.input, channelPngs: (layer) => state.layerPngs.get(layer) ?? null }),
        (message) => inspector.clear(message || null)),
      clear: (message) => inspector.clear(message || (state.unit ? null : "Select a feature map or a unit in the network below.")),
    },
    frameworks: {
      kind: "compare",
      load: () => {
        if (!hasInput()) return null;
        const other = counterpart(state.models, state.model);
        if (!other) {
          comparison.clear(`No model of the ${state.model.architecture} architecture from the other framework is served.`);
          return null;
        }
        const version = other.versions?.includes(state.model.version) ? state.model.version : other.version;
        return fetchFresh("compare", requestFor((model, image) => api.compare([model, { name: other.name, version }], image, { target: explained() })),
          (response) => comparison.show(response, state.input), (message) => comparison.clear(message));
      },
      clear: (message) => comparison.clear(message),
    },
    occlusion: {
      kind: "explain",
      load: () => hasInput() && fetchFresh("explain", requestFor((model, image) => api.explain(model, image, occlusion.options(explained()))),
        (response) => occlusion.show(response), (message) => occlusion.clear(message)),
      clear: (message) => occlusion.clear(message),
    },
  };
}
