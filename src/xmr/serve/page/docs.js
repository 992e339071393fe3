// /docs: the service's API, rendered from its own /openapi.json with plain JS (nothing fetched from
// elsewhere, so it works offline), with a form to try each endpoint.
"use strict";
const $ = (id) => document.getElementById(id);
let spec = null;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// el("td", {className: "x"}, "text", child, ...): an element with its properties and children
function el(tag, props, ...children) {
  const node = Object.assign(document.createElement(tag), props || {});
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function resolve(schema) {
  return schema && schema.$ref ? spec.components.schemas[schema.$ref.split("/").pop()] : schema;
}

function typeText(schema) {
  if (!schema) return "any";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.anyOf) return schema.anyOf.map(typeText).join(" | ");
  if (schema.type === "array") return `array of ${typeText(schema.items)}`;
  if (schema.type === "object" && schema.additionalProperties) return `object of ${typeText(schema.additionalProperties)}`;
  if (schema.contentMediaType || schema.format === "binary") return "file";
  return (schema.type || "any") + (schema.format ? ` (${schema.format})` : "");
}

function limits(schema) {
  const out = [];
  for (const s of [schema, ...(schema.anyOf || [])]) {
    for (const key of ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
                       "minItems", "maxItems", "pattern"]) {
      if (s[key] !== undefined) out.push(`${key} ${s[key]}`);
    }
    if (s.enum) out.push(`one of ${s.enum.join(", ")}`);
  }
  if (schema.default !== undefined) out.push(`default ${JSON.stringify(schema.default)}`);
  return out.join("; ");
}

function fieldsTable(schema) {
  const body = resolve(schema);
  if (!body || !body.properties) return el("p", {}, typeText(schema));
  const required = new Set(body.required || []);
  const table = el("table", {}, el("tr", {}, ...["field", "type", "required", "limits", "about"].map((h) => el("th", {}, h))));
  for (const [name, prop] of Object.entries(body.properties)) {
    table.append(el("tr", {}, el("td", {}, el("code", {}, name)), el("td", {}, typeText(prop)),
                    el("td", {}, required.has(name) ? "required" : ""), el("td", {}, limits(prop)),
                    el("td", {}, prop.description || prop.title || "")));
  }
  return table;
}

// the form that sends one request to the operation and shows the answer
function tryIt(path, method, op) {
  const form = el("form", { className: "try" });
  const params = (op.parameters || []).map((p) => {
    const input = el("input", { name: p.name, placeholder: p.name, required: Boolean(p.required) });
    form.append(el("label", {}, `${p.name} (${p.in}) `, input));
    return { param: p, input };
  });
  const content = (op.requestBody && op.requestBody.content) || {};
  let json = null;
  const parts = [];
  if (content["application/json"]) {
    json = el("textarea", { rows: 4, cols: 60, value: JSON.stringify({ text: "a red circle", k: 5 }) });
    form.append(el("label", {}, "JSON body ", json));
  } else if (content["multipart/form-data"]) {
    const schema = resolve(content["multipart/form-data"].schema) || { properties: {} };
    for (const [name, prop] of Object.entries(schema.properties)) {
      const file = typeText(prop) === "file";
      const input = el("input", { name, type: file ? "file" : "text", placeholder: name });
      parts.push({ name, input, file });
      form.append(el("label", {}, `${name} `, input));
    }
  }
  const answer = el("pre", { className: "answer", hidden: true });
  form.append(el("button", { type: "submit" }, `send ${method.toUpperCase()}`), answer);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let url = path;
    const query = new URLSearchParams();
    for (const { param, input } of params) {
      if (param.in === "path") url = url.replace(`{${param.name}}`, encodeURIComponent(input.value));
      else if (input.value) query.set(param.name, input.value);
    }
    if ([...query].length) url += `?${query}`;
    const options = { method: method.toUpperCase() };
    if (json) options.headers = { "Content-Type": "application/json" };
    if (json) options.body = json.value;
    if (parts.length) {
      options.body = new FormData();
      for (const { name, input, file } of parts) {
        if (file ? input.files[0] : input.value) options.body.append(name, file ? input.files[0] : input.value);
      }
    }
    answer.hidden = false;
    answer.textContent = "…";
    try {
      const response = await fetch(url, withKey(options));
      if (response.status === 401) askForKey(apiKey() ? "that API key was refused: try again" : "");
      const type = response.headers.get("content-type") || "";
      const shown = type.startsWith("image/") ? `(${type}, ${(await response.blob()).size} bytes)`
        : type.includes("json") ? JSON.stringify(await response.json(), null, 2) : await response.text();
      answer.textContent = `${response.status} ${response.statusText}\n${shown}`;
    } catch (err) {
      answer.textContent = `failed: ${err.message}`;
    }
  });
  return form;
}

function operation(path, method, op) {
  const id = `${method}-${path}`.replace(/[^A-Za-z0-9]+/g, "-");
  const section = el("section", { className: "op", id });
  section.dataset.op = `${method.toUpperCase()} ${path}`;
  section.append(el("h2", {}, el("span", { className: `method ${method}` }, method.toUpperCase()), ` ${path}`));
  const about = op.description || op.summary;
  if (about) section.append(el("p", {}, about));
  if (op.requestBody) {
    for (const [type, media] of Object.entries(op.requestBody.content)) {
      section.append(el("h3", {}, `body: ${type}, ${typeText(media.schema)}`), fieldsTable(media.schema));
    }
  }
  const answers = el("ul", { className: "responses" });
  for (const [status, response] of Object.entries(op.responses || {})) {
    const types = Object.entries(response.content || {}).map(([t, m]) => `${t}${m.schema ? `: ${typeText(m.schema)}` : ""}`);
    answers.append(el("li", {}, el("code", {}, status), ` ${response.description || ""}`,
                      types.length ? ` (${types.join(", ")})` : ""));
  }
  section.append(el("h3", {}, "answers"), answers, tryIt(path, method, op));
  $("toc").append(el("a", { href: `#${id}` }, section.dataset.op));
  return section;
}

async function load() {
  spec = await api("/openapi.json");
  $("title").textContent = `${spec.info.title}: the API (version ${spec.info.version})`;
  $("about").textContent = spec.info.description || "";
  $("toc").replaceChildren();
  $("ops").replaceChildren();
  $("schemas").replaceChildren(el("h2", {}, "schemas"));
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) $("ops").append(operation(path, method, op));
  }
  for (const [name, schema] of Object.entries((spec.components && spec.components.schemas) || {})) {
    $("schemas").append(el("section", { className: "schema", id: `schema-${name}` }, el("h3", {}, name),
                           schema.description ? el("p", {}, schema.description) : null,
                           fieldsTable({ $ref: `#/components/schemas/${name}` })));
  }
  showError("");
}

keyForm.onKey = () => load().catch((e) => showError(e.message));
setUpKeyForm();
load().catch((e) => showError(e.message));
