// DOMException (WebIDL), from core-js: the error class web APIs throw (AbortError, DataCloneError...).
import DOMException from "core-js-pure/stable/dom-exception/index.js";

export { DOMException };
