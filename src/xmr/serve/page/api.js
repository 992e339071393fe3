// What the page and /docs share: calls to the service's own API, with the API key when it asks for one.
// The key is kept in this tab's session (sessionStorage: gone when the tab closes) and sent as X-API-Key.
"use strict";
const KEY_NAME = "xmr-api-key";
const keyForm = { onKey: null };  // the page sets onKey: what to redo once a key is given

function apiKey() {
  return sessionStorage.getItem(KEY_NAME) || "";
}

function withKey(options) {
  const headers = new Headers((options && options.headers) || {});
  const key = apiKey();
  if (key) headers.set("X-API-Key", key);
  return { ...(options || {}), headers };
}

// The JSON answer of `path`; a refusal throws an Error with the service's message and its status
// (a 401 also opens the key field).
async function api(path, options) {
  const response = await fetch(path, withKey(options));
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    if (response.status === 401) askForKey(apiKey() ? "that API key was refused: try again" : "");
    throw error;
  }
  return body;
}

// Show `url` (one of the service's /images) in `img`: through fetch with the key when there is one,
// since an <img src> cannot send a header. Returns the object URL to revoke later, or null.
async function showImage(img, url) {
  if (!apiKey()) { img.src = url; return null; }
  const response = await fetch(url, withKey());
  if (!response.ok) return null;
  const blobUrl = URL.createObjectURL(await response.blob());
  img.src = blobUrl;
  return blobUrl;
}

function askForKey(message) {
  const form = document.getElementById("key-form");
  form.hidden = false;
  document.getElementById("key-note").textContent =
    message || "This service needs an API key. It is kept in this tab only and sent as the X-API-Key header.";
  document.getElementById("api-key").focus();
}

function setUpKeyForm() {
  const form = document.getElementById("key-form");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const key = document.getElementById("api-key").value.trim();  // a pasted key often ends in a space
    if (!key) return;
    sessionStorage.setItem(KEY_NAME, key);
    document.getElementById("api-key").value = "";
    form.hidden = true;
    document.getElementById("key-forget").hidden = false;
    if (keyForm.onKey) keyForm.onKey();
  });
  const forget = document.getElementById("key-forget");
  forget.hidden = !apiKey();
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_NAME);
    forget.hidden = true;
    askForKey("Key forgotten. Give a key to search again.");
  });
}
