// The bundles pages: a drop zone for the upload form (a dropped file goes into the `Bundle file` input) and
// the upload's progress from the XMLHttpRequest's upload events (htmx sends the form); styles of the
// bundles, chat index, runs and usage pages.
import "./pages.css";

const SLUG_MAX = 64;

// `Weather Agent.v2.mjs` -> `weather-agent-v2`: a slug the upload accepts, offered when none was typed.
function slugFromFileName(name) {
  const base = name.replace(/\.(mjs|cjs|js)$/i, "");
  return base
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, SLUG_MAX)
    .replace(/-+$/g, "");
}

function fileChosen(form) {
  const input = form.querySelector('input[type="file"]');
  const slug = form.querySelector('input[name="slug"]');
  const file = input?.files?.[0];
  if (file && slug && !slug.value.trim()) slug.value = slugFromFileName(file.name);
}

document.addEventListener("change", (event) => {
  const input = event.target;
  if (input instanceof HTMLInputElement && input.type === "file") {
    const form = input.closest("form[data-upload-form]");
    if (form) fileChosen(form);
  }
});

// Drag and drop: the zone highlights while a file is over it; dropping puts the file in the input.
document.addEventListener("dragover", (event) => {
  const zone = event.target instanceof Element && event.target.closest("[data-dropzone]");
  if (!zone) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
  zone.classList.add("dropzone-over");
});

document.addEventListener("dragleave", (event) => {
  const zone = event.target instanceof Element && event.target.closest("[data-dropzone]");
  if (zone && !zone.contains(event.relatedTarget)) zone.classList.remove("dropzone-over");
});

document.addEventListener("drop", (event) => {
  const zone = event.target instanceof Element && event.target.closest("[data-dropzone]");
  if (!zone) return;
  event.preventDefault();
  zone.classList.remove("dropzone-over");
  const files = event.dataTransfer?.files;
  const input = zone.querySelector('input[type="file"]');
  if (!files?.length || !input) return;
  const transfer = new DataTransfer();
  transfer.items.add(files[0]);
  input.files = transfer.files;
  input.dispatchEvent(new Event("change", { bubbles: true }));
  input.focus();
});

// Upload progress: htmx hands over its XMLHttpRequest before sending; its `upload` events say how much of
// the body left the browser.
function showProgress(percent) {
  const box = document.getElementById("upload-progress");
  const bar = document.getElementById("upload-bar");
  const text = document.getElementById("upload-percent");
  if (!box || !bar || !text) return;
  box.hidden = false;
  bar.value = percent;
  bar.textContent = `${percent} %`;
  text.textContent = percent >= 100 ? "Uploaded 100 %" : `Uploading… ${percent} %`;
}

document.addEventListener("htmx:beforeSend", (event) => {
  const form = event.detail.elt;
  if (!(form instanceof HTMLFormElement) || !form.matches("[data-upload-form]")) return;
  const xhr = event.detail.xhr;
  showProgress(0);
  xhr.upload.addEventListener("progress", (progress) => {
    if (progress.lengthComputable && progress.total > 0) {
      showProgress(Math.min(100, Math.round((100 * progress.loaded) / progress.total)));
    }
  });
  xhr.upload.addEventListener("load", () => showProgress(100));
});

// After htmx swapped the upload block back in, focus what needs attention: the first field with an error.
document.addEventListener("htmx:afterSettle", (event) => {
  const source = event.detail.requestConfig?.elt;
  if (!(source instanceof Element) || !source.matches("[data-upload-form]")) return;
  const invalid = document.querySelector("#upload .field-invalid input, #upload .field-invalid select");
  if (invalid) invalid.focus();
});
