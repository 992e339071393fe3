// The xmr search page: plain JS against the service's own API (no network beyond it).
"use strict";
const $ = (id) => document.getElementById(id);
const state = { image: null, imageId: null, offset: 0, info: null, last: null };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

async function loadInfo() {
  const info = await api("/info");
  state.info = info;
  $("run-info").textContent = `${info.run} — ${info.n_images} images, ${info.n_texts} texts`;
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

function setImage(dataUrl, itemId, previewUrl) {
  state.image = dataUrl;
  state.imageId = itemId;
  const preview = $("drop-preview");
  preview.src = previewUrl || dataUrl || "";
  preview.hidden = !(dataUrl || previewUrl);
  $("drop-clear").hidden = preview.hidden;
}

function readFile(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => { setImage(reader.result, null); search(0); };
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
    render(answer, body);
  } catch (e) {
    $("status").textContent = "";
    showError(e.message);
  }
}

function render(answer, body) {
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of answer.results) {
    const card = document.createElement("article");
    card.className = "hit" + (answer.target === "texts" ? " text-hit" : "");
    card.dataset.id = hit.id;
    if (hit.image_url) {
      const img = document.createElement("img");
      img.src = hit.image_url;
      img.alt = hit.texts[0] || hit.id;
      img.loading = "lazy";
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
$("drop-clear").addEventListener("click", (e) => { e.stopPropagation(); setImage(null, null); $("file").value = ""; });
loadInfo().catch((e) => showError(e.message));
