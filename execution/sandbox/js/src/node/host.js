// What the Node modules use of the runtime (its web crypto, URL, encoders, random generator),
// handed over by install() in modules.js: this bundle is compiled apart from the runtime, so it
// cannot import the runtime's modules (it would get copies, with their own state).
export const host = {};
