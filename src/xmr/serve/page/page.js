// The xmr search page: plain JS against the service's own API (no network beyond it; api.js calls it).
"use strict";
const $ = (id) => document.getElementById(id);
// image: an upload (data URL), imageId: a gallery item ("search by this"); imageFresh: the image has not
// been searched with yet (a refused upload is dropped); blobs: the object URLs of the shown results' images
const state = { image: null, imageId: null, imageFresh: false, offset: 0, info: null, last: null, blobs: [],
                previewBlob: null };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function loadInfo() {
  const info = await api("/info");
  state.info = info;
  $("run-info").textContent = `${info.run} — ${info.n_images} images, ${info.n_texts} texts`;
  if (!info.n_texts) {  // an index of images only: nothing to return but images
    $("target").querySelector('option[value="texts"]').remove();
    $("target-box").hidden = true;
  }
  if (info.rerankers.length) {
    $("rerank-box").hidden = false;
    for (const name of info.rerankers) {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      $("rerank").appendChild(option);
    }
  }
  for (const [field, values] of Object.entries(info.fields)) {
    if (values.length < 2 || values.length > 50) continue;  // nothing to choose, or too many for a list
    const label = document.createElement("label");
    label.textContent = `${field} `;
    const select = document.createElement("select");
    select.dataset.field = field;
    select.id = `filter-${field}`;
    select.appendChild(new Option("any", ""));
    for (const v of values) select.appendChild(new Option(v, v));
    select.addEventListener("change", () => search(0));
    label.appendChild(select);
    $("filters").appendChild(label);
  }
}

function filters() {
  const out = {};
  for (const select of document.querySelectorAll("#filters select")) {
    if (select.value) out[select.dataset.field] = select.value;
  }
  return out;
}

// The query image: an upload (`dataUrl`, named `name`), or a gallery item (`itemId`, shown from
// `previewUrl`), or none. While there is one, the drop zone names it and the text box says that typed
// text changes it (an image + text query); "remove image" clears it in one click.
function setImage(dataUrl, itemId, previewUrl, name) {
  state.image = dataUrl;
  state.imageId = itemId;
  state.imageFresh = Boolean(dataUrl || itemId);
  if (state.previewBlob) URL.revokeObjectURL(state.previewBlob);
  state.previewBlob = null;
  const preview = $("drop-preview").cloneNode(false);  // a fresh element: a slower earlier fetch cannot fill it
  preview.removeAttribute("src");
  $("drop-preview").replaceWith(preview);
  const using = Boolean(dataUrl || itemId);
  if (dataUrl) preview.src = dataUrl;
  else if (previewUrl) showImage(preview, previewUrl).then((blob) => keepBlob(preview, blob, (b) => { state.previewBlob = b; }));
  preview.hidden = !using;
  $("drop-clear").hidden = !using;
  $("drop-label").hidden = using;
  $("drop-using").hidden = !using;
  $("drop-using").textContent = using
    ? `Searching by ${itemId ? `item ${itemId}` : `the image ${name || "you chose"}`}: text typed above changes it ` +
      "(image + text). Remove the image for a text search."
    : "";
  $("text").placeholder = using ? "optional: what to change in this image" : "a cat with a smile";
  $("text").classList.toggle("composing", using);
}

// an object URL made for `img`: kept by `keep` while `img` is in the page, revoked if it was replaced meanwhile
function keepBlob(img, blob, keep) {
  if (!blob) return;
  if (img.isConnected) keep(blob);
  else URL.revokeObjectURL(blob);
}

function clearImage() {
  setImage(null, null);
  $("file").value = "";
}

function clearResults() {
  for (const url of state.blobs) URL.revokeObjectURL(url);
  state.blobs = [];
  state.last = null;
  $("results").replaceChildren();
  $("page").textContent = "";
  $("prev").disabled = $("next").disabled = true;
}

function readFile(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => { setImage(reader.result, null, null, file.name); search(0); };
  reader.onerror = () => showError("could not read that file");
  reader.readAsDataURL(file);
}

async function search(offset) {
  const text = $("text").value.trim();
  const body = { target: $("target").value, k: Number($("k").value), offset, filters: filters() };
  if (text) body.text = text;
  if (state.image) body.image = state.image;
  if (state.imageId) body.image_id = state.imageId;
  if ($("rerank").value) body.rerank = $("rerank").value;
  if (!body.text && !body.image && !body.image_id) { showError("type a text or drop an image"); return; }
  showError("");
  $("status").textContent = "searching…";
  try {
    const answer = await api("/search", { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify(body) });
    state.offset = offset;
    state.last = answer;
    state.imageFresh = false;
    render(answer, body);
  } catch (e) {
    // the old results do not answer this query: gone, and an image the service refused goes with them
    clearResults();
    $("status").textContent = "";
    if (state.imageFresh && e.status !== 401) clearImage();
    showError(e.message);
  }
}

function render(answer, body) {
  const grid = $("results");
  const old = state.blobs;
  state.blobs = [];
  grid.replaceChildren();
  for (const url of old) URL.revokeObjectURL(url);
  for (const hit of answer.results) {
    const card = document.createElement("article");
    card.className = "hit" + (answer.target === "texts" ? " text-hit" : "");
    card.dataset.id = hit.id;
    if (hit.image_url) {
      const img = document.createElement("img");
      img.alt = hit.texts[0] || hit.id;
      img.loading = "lazy";
      showImage(img, hit.image_url).then((blob) => keepBlob(img, blob, (b) => state.blobs.push(b)));
      card.appendChild(img);
    }
    const texts = document.createElement("div");
    texts.className = "texts";
    texts.textContent = hit.texts.slice(0, 3).join(" · ") || hit.id;
    card.appendChild(texts);
    const score = document.createElement("div");
    score.className = "score";
    score.textContent = `#${hit.rank}  score ${hit.score.toFixed(3)}` + (hit.fields.style ? `  [${hit.fields.style}]` : "");
    card.appendChild(score);
    const item = answer.target === "images" ? hit.id : hit.fields.item;
    if (item) {
      const again = document.createElement("button");
      again.type = "button";
      again.textContent = "search by this";
      again.addEventListener("click", () => {
        $("text").value = "";
        setImage(null, item, hit.image_url);
        $("target").value = "images";
        $("query").scrollIntoView();  // where the image now shows, above the box the next text is typed in
        search(0);
      });
      card.appendChild(again);
    }
    grid.appendChild(card);
  }
  const k = body.k;
  const shown = answer.results.length;
  $("status").textContent = `${answer.total} matching, showing ${shown ? body.offset + 1 : 0}–${body.offset + shown} ` +
    `(${answer.query} query, ${answer.took_ms.toFixed(0)} ms)`;
  $("page").textContent = `page ${Math.floor(body.offset / k) + 1}`;
  $("prev").disabled = body.offset === 0;
  $("next").disabled = body.offset + shown >= Math.min(answer.total, state.info ? state.info.k_max : Infinity);
}

$("query").addEventListener("submit", (e) => { e.preventDefault(); search(0); });
$("prev").addEventListener("click", () => search(Math.max(0, state.offset - Number($("k").value))));
$("next").addEventListener("click", () => search(state.offset + Number($("k").value)));
$("target").addEventListener("change", () => search(0));
$("rerank").addEventListener("change", () => search(0));
const drop = $("drop");
drop.addEventListener("click", (e) => { if (e.target.id !== "drop-clear") $("file").click(); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); readFile(e.dataTransfer.files[0]); });
$("file").addEventListener("change", (e) => readFile(e.target.files[0]));
$("drop-clear").addEventListener("click", (e) => { e.stopPropagation(); clearImage(); });
keyForm.onKey = () => {  // a key was given: load what the refusal stopped, then redo the last query
  showError("");
  const again = () => { if (state.last || $("text").value.trim() || state.image || state.imageId) search(state.offset); };
  (state.info ? Promise.resolve() : loadInfo()).then(again).catch((e) => showError(e.message));
};
setUpKeyForm();
loadInfo().catch((e) => showError(e.message));
