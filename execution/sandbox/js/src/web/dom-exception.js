// DOMException (WebIDL): QuickJS-NG's own, the class its built-ins (atob, btoa) throw, so
// `error instanceof DOMException` holds for those too; core-js's only where the engine has none.
import CoreJsDOMException from "core-js-pure/stable/dom-exception/index.js";

export const DOMException = typeof globalThis.DOMException === "function" ? globalThis.DOMException : CoreJsDOMException;
