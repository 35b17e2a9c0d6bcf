// retrieval serve: drag-and-drop and paste into the search form, the threshold's live value.
// The page works without this file; nothing here talks to any other host.
"use strict";

function useFile(file) {
  const input = document.getElementById("image-input");
  const form = document.getElementById("search-form");
  if (!input || !form || !file) return;
  const files = new DataTransfer();
  files.items.add(file);
  input.files = files.files;
  showPreview(file);
  form.requestSubmit();
}

function showPreview(file) {
  const preview = document.getElementById("drop-preview");
  const text = document.querySelector(".drop-text");
  if (!preview || !file || !file.type.startsWith("image/")) return;
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  if (text) text.hidden = true;
}

document.addEventListener("DOMContentLoaded", () => {
  const drop = document.getElementById("drop");
  const input = document.getElementById("image-input");
  if (drop && input) {
    ["dragenter", "dragover"].forEach((name) =>
      drop.addEventListener(name, (event) => {
        event.preventDefault();
        drop.classList.add("over");
      })
    );
    ["dragleave", "drop"].forEach((name) =>
      drop.addEventListener(name, () => drop.classList.remove("over"))
    );
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      useFile(event.dataTransfer.files[0]);
    });
    input.addEventListener("change", () => {
      showPreview(input.files[0]);
      if (input.files.length) input.form.requestSubmit();
    });
    document.addEventListener("paste", (event) => {
      const item = [...event.clipboardData.items].find((i) => i.kind === "file");
      if (item) useFile(item.getAsFile());
    });
  }
  const slider = document.getElementById("threshold");
  const shown = document.getElementById("threshold-value");
  if (slider && shown) {
    slider.addEventListener("input", () => (shown.value = Number(slider.value).toFixed(3)));
    slider.addEventListener("change", () => slider.form.submit());
  }
});
