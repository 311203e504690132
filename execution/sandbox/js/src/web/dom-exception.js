// DOMException (WebIDL): QuickJS-NG's own (both the native runner's engine and the Python binding's
// have it), the class its built-ins (atob, btoa) throw, so `error instanceof DOMException` holds
// for those too.
export const DOMException = globalThis.DOMException;
