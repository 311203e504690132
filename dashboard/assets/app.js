// Every dashboard page: htmx for live fragments, copy buttons, the organization switcher.
import htmx from "htmx.org";
import "./app.css";

window.htmx = htmx;

function meta(name) {
  return document.querySelector(`meta[name="${name}"]`)?.content ?? "";
}

// htmx requests carry the CSRF token, and the current organization for the REST API (members of
// several organizations name one in X-Organization).
document.addEventListener("htmx:configRequest", (event) => {
  event.detail.headers["X-CSRFToken"] = meta("csrf-token");
  const organization = meta("lightfast-organization");
  if (organization) event.detail.headers["X-Organization"] = organization;
});

// <button data-copy="ELEMENT_ID">: copies that element's value (an input) or text.
async function copyFrom(button) {
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = "value" in source ? source.value : source.textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard API (a plain-http page on another host): select it for the user to copy.
    if (source.select) source.select();
    return;
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => {
    button.textContent = label;
  }, 1500);
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (button) {
    event.preventDefault();
    copyFrom(button);
  }
});

// <select data-autosubmit>: submits its form on change (its form keeps a submit button for keyboards
// and scripts that are off).
document.addEventListener("change", (event) => {
  const select = event.target.closest("select[data-autosubmit]");
  if (select?.form) select.form.requestSubmit();
});

// <form data-confirm="Question?">: asks before submitting (revoke, remove).
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
