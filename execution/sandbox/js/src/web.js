// The web platform globals bundles expect, one module per subject under web/.
export * from "./web/encoding.js";
export * from "./web/url.js";
export * from "./web/fetch.js";
export * from "./web/clone.js";
export * from "./web/crypto.js";
export * from "./web/dom-exception.js";
