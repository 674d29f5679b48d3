// Renders the API's own OpenAPI document as a browsable reference with a
// "send" form per operation. No framework and no CDN: the API serves this
// file itself, and the page works offline next to it.
"use strict";

const SPEC_URL = "/api/v1/openapi.json";
const METHODS = ["get", "post", "put", "patch", "delete"];
const keyInput = document.getElementById("key");
const main = document.getElementById("main");

keyInput.value = sessionStorage.getItem("supportrag-admin-key") || "";
keyInput.addEventListener("input", () => sessionStorage.setItem("supportrag-admin-key", keyInput.value));

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child != null) node.append(child);
  }
  return node;
}

function resolve(spec, schema, depth) {
  if (!schema || depth > 8) return schema;
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return resolve(spec, (spec.components && spec.components.schemas || {})[name], depth + 1);
  }
  const out = Array.isArray(schema) ? [] : {};
  for (const [k, v] of Object.entries(schema)) {
    out[k] = v && typeof v === "object" ? resolve(spec, v, depth + 1) : v;
  }
  return out;
}

// A body to start editing from: the schema's example, else its shape.
function skeleton(schema, depth) {
  if (!schema || depth > 6) return null;
  if (schema.example !== undefined) return schema.example;
  const options = schema.oneOf || schema.anyOf || schema.allOf;
  if (options) return skeleton(options.find(o => o.type !== "null") || options[0], depth + 1);
  const type = Array.isArray(schema.type) ? schema.type.find(t => t !== "null") : schema.type;
  switch (type) {
    case "object": {
      const obj = {};
      for (const [k, v] of Object.entries(schema.properties || {})) obj[k] = skeleton(v, depth + 1);
      return obj;
    }
    case "array": return [];
    case "string": return schema.enum ? schema.enum[0] : "";
    case "integer": case "number": return 0;
    case "boolean": return false;
    default: return null;
  }
}

function parameterTable(params) {
  if (!params.length) return null;
  const rows = params.map(p => el("tr", {},
    el("td", {}, el("code", { text: p.name })),
    el("td", { text: p.in + (p.required ? ", required" : "") }),
    el("td", { text: p.description || "" })));
  return el("table", {}, el("tr", {}, el("th", { text: "parameter" }), el("th", { text: "in" }), el("th", { text: "meaning" })), ...rows);
}

function responseList(spec, responses) {
  const list = el("ul");
  for (const [status, response] of Object.entries(responses || {})) {
    const resolved = resolve(spec, response, 0) || {};
    list.append(el("li", {}, el("strong", { text: status + " " }), resolved.description || ""));
  }
  return list;
}

function tryForm(spec, path, method, op) {
  const form = el("form");
  const params = (op.parameters || []).map(p => resolve(spec, p, 0));
  const inputs = {};
  for (const p of params) {
    const id = `${method}-${path}-${p.in}-${p.name}`.replace(/[^A-Za-z0-9_-]/g, "_");
    inputs[p.in + ":" + p.name] = el("input", { type: "text", id, name: p.name });
    form.append(el("label", { for: id, text: `${p.name} (${p.in})` }), inputs[p.in + ":" + p.name]);
  }
  let body = null;
  const content = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  if (content) {
    const id = `${method}-${path}-body`.replace(/[^A-Za-z0-9_-]/g, "_");
    body = el("textarea", { id, spellcheck: "false" });
    body.value = JSON.stringify(skeleton(resolve(spec, content.schema, 0), 0), null, 2);
    form.append(el("label", { for: id, text: "JSON body" }), body);
  }
  const output = el("pre", { "aria-live": "polite" });
  form.append(el("button", { type: "submit", text: "Send" }), output);
  form.addEventListener("submit", async event => {
    event.preventDefault();
    let url = path;
    const query = new URLSearchParams();
    const headers = {};
    for (const p of params) {
      const value = inputs[p.in + ":" + p.name].value;
      if (value === "") continue;
      if (p.in === "path") url = url.replace(`{${p.name}}`, encodeURIComponent(value));
      else if (p.in === "query") query.append(p.name, value);
      else if (p.in === "header") headers[p.name] = value;
    }
    if (keyInput.value) headers["Authorization"] = "Bearer " + keyInput.value;
    const init = { method: method.toUpperCase(), headers };
    if (body) {
      headers["Content-Type"] = "application/json";
      init.body = body.value;
    }
    const qs = query.toString();
    output.textContent = "…";
    try {
      const res = await fetch(url + (qs ? "?" + qs : ""), init);
      const text = await res.text();
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
      output.textContent = `${res.status} ${res.statusText}\n\n${shown}`;
    } catch (err) {
      output.textContent = "request failed: " + err;
    }
  });
  return form;
}

function operation(spec, path, method, op) {
  const summary = el("summary", {},
    el("span", { class: "method " + method, text: method.toUpperCase() }),
    el("span", { class: "path", text: path }),
    el("span", { class: "summary", text: op.summary || "" }));
  const bodyDiv = el("div", { class: "body" });
  if (op.description && op.description !== op.summary) bodyDiv.append(el("p", { text: op.description }));
  bodyDiv.append(parameterTable((op.parameters || []).map(p => resolve(spec, p, 0))) || "");
  const content = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  if (content) {
    bodyDiv.append(el("h4", { text: "Request body" }),
      el("pre", { text: JSON.stringify(resolve(spec, content.schema, 0), null, 2) }));
  }
  bodyDiv.append(el("h4", { text: "Responses" }), responseList(spec, op.responses),
    el("h4", { text: "Try it" }), tryForm(spec, path, method, op));
  return el("details", { class: "op" }, summary, bodyDiv);
}

function render(spec) {
  const byTag = new Map();
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, op]);
    }
  }
  main.replaceChildren(el("p", {},
    `${spec.info.title} ${spec.info.version}. Management endpoints need the admin key above. The document itself: `,
    el("a", { href: SPEC_URL, text: SPEC_URL })));
  for (const [tag, ops] of byTag) {
    main.append(el("h2", { text: tag }));
    for (const [path, method, op] of ops) main.append(operation(spec, path, method, op));
  }
}

fetch(SPEC_URL)
  .then(res => res.ok ? res.json() : Promise.reject(new Error("HTTP " + res.status)))
  .then(render)
  .catch(err => main.replaceChildren(el("p", { text: "Could not load " + SPEC_URL + ": " + err })));
