/* flowbreaker triage console (issue 22): one page, no framework, no build step, nothing from elsewhere.
 *
 * It talks only to the documented /v1 API of the worker that served it (docs/api.md). Every value that comes
 * from the API is put into the page as text (text nodes, textContent): never as HTML, since agent ids,
 * destinations and reasons are written by agents and may be hostile. Links are built only from "#/" and
 * encodeURIComponent. The bearer token lives in this tab's sessionStorage (never a cookie); a token handed
 * over in the URL fragment (#token=...) is moved there and taken out of the address bar at once.
 */
"use strict";

(function () {
  const TOKEN_KEY = "flowbreaker.console.token";
  const POLL_MS = 5000;
  const SEVERITY_RANK = { critical: 4, high: 3, medium: 2, low: 1, ok: 0 };
  const RAISED = new Set(["medium", "high", "critical"]);

  const S = {
    token: null,      // the bearer token (also in sessionStorage)
    me: null,         // {name, role, permissions}
    perms: new Set(),
    doc: null,        // the API's OpenAPI document: which routes and fields this worker serves
    view: null,       // {name, refresh}
    gen: 0,           // bumped on every navigation: late answers for an old view are dropped
    busy: false,
  };
  const shown = new WeakMap(); // container -> key of what it shows (re-rendered only on change)

  // ------------------------------------------------------------------ DOM, always as text
  const SAFE_ATTRS = new Set(["id", "for", "type", "name", "value", "min", "max", "step", "required", "placeholder",
    "role", "tabindex", "datetime", "title", "scope", "colspan", "autocomplete", "maxlength", "minlength",
    "spellcheck", "open"]);

  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "href") {
        if (typeof v !== "string" || !v.startsWith("#/")) throw new Error("only in-page links");
        node.setAttribute("href", v);
      } else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else if (k === "disabled" || k === "checked") node[k] = true;
      else if (SAFE_ATTRS.has(k) || k.startsWith("aria-") || k.startsWith("data-")) node.setAttribute(k, String(v));
      else throw new Error("attribute not allowed: " + k);
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) append(node, c);
      else if (c instanceof Node) node.appendChild(c);
      else node.appendChild(document.createTextNode(String(c)));
    }
  }

  const $ = (id) => document.getElementById(id);

  function fill(box, key, build) {
    // Re-render only when the data changed, and not while the user is inside (focus or typing) the box.
    if (shown.get(box) === key) return;
    if (shown.has(box) && box.contains(document.activeElement)) return;
    box.replaceChildren(...[].concat(build()).filter((n) => n !== null && n !== undefined));
    shown.set(box, key);
  }

  function oneLine(s) {
    const t = String(s === null || s === undefined ? "" : s).replace(/\s+/g, " ").trim();
    return t.length > 400 ? t.slice(0, 399) + "…" : t;
  }

  function link(kind, id, text) {
    return h("a", { href: "#/" + kind + "/" + encodeURIComponent(id), class: "id" }, text === undefined ? id : text);
  }

  function sev(s) {
    const name = typeof s === "string" && s ? s : "none";
    return h("span", { class: "sev sev-" + (SEVERITY_RANK[name] !== undefined ? name : "none") },
      typeof s === "string" && s ? s : "—");
  }

  function stateBadge(s) {
    const known = ["open", "half_open", "closed"].includes(s);
    const label = { open: "frozen (open)", half_open: "probation (half_open)", closed: "closed" }[s] || String(s);
    return h("span", { class: "state" + (known ? " state-" + s : "") }, label);
  }

  function text(v) {
    return v === null || v === undefined || v === "" ? "—" : String(v);
  }

  function num(v, digits) {
    if (typeof v !== "number" || !isFinite(v)) return text(v);
    return digits === undefined ? v.toLocaleString("en-US") : v.toLocaleString("en-US", {
      maximumFractionDigits: digits });
  }

  // ------------------------------------------------------------------ time: UTC and local
  const pad = (n, w = 2) => String(n).padStart(w, "0");

  function toDate(v) {
    if (v === null || v === undefined || v === "") return null;
    const d = typeof v === "number" ? new Date(v * 1000) : new Date(String(v));
    return isNaN(d.getTime()) ? null : d;
  }

  function utcText(d) {
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
  }

  function localText(d, full) {
    const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `;
    const sameDay = d.getFullYear() === d.getUTCFullYear() && d.getMonth() === d.getUTCMonth() &&
      d.getDate() === d.getUTCDate();
    return (full || !sameDay ? day : "") + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} local`;
  }

  function when(v) {
    const d = toDate(v);
    if (d === null) return h("span", {}, text(v));
    return h("span", { class: "when" },
      h("time", { datetime: d.toISOString(), title: d.toISOString() }, utcText(d)), " ",
      h("span", { class: "local" }, "(" + localText(d) + ")"));
  }

  // ------------------------------------------------------------------ the API
  class ApiError extends Error {
    constructor(status, code, message, body) {
      super(message);
      this.status = status;
      this.code = code;
      this.body = body || {};
    }
    line() {
      return oneLine((this.status ? this.status + " " : "") + this.code + ": " + this.message);
    }
  }

  async function api(method, path, body, opts) {
    const headers = { "Accept": "application/json" };
    if (!(opts && opts.anonymous)) headers["Authorization"] = "Bearer " + S.token;
    const init = { method, headers, credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer",
      redirect: "error", mode: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, "unreachable", "no answer from the worker (" + oneLine(e && e.message) + ")");
    }
    const raw = await resp.text();
    let data = null;
    if (raw) {
      try {
        data = JSON.parse(raw);
      } catch (e) {
        data = null;
      }
    }
    if (!resp.ok) {
      const err = (data && typeof data === "object" && data.error && typeof data.error === "object") ? data.error : {};
      const message = typeof err.message === "string" ? err.message : (resp.statusText || "request failed");
      const code = typeof err.code === "string" ? err.code : "error";
      const e = new ApiError(resp.status, code, message, err);
      if (resp.status === 401 && !(opts && opts.anonymous)) signOut("The worker refused the token: " + e.line());
      throw e;
    }
    if (data === null && raw) throw new ApiError(resp.status, "bad_answer", "the worker's answer is not JSON");
    return data;
  }

  const enc = encodeURIComponent;

  function op(path, method) {
    const p = S.doc && S.doc.paths && S.doc.paths[path];
    return (p && p[method]) || null;
  }

  function roleMay(path, method) {
    // the roles the API document names for an operation (x-roles): what the page offers follows them
    const o = op(path, method);
    return !!(o && Array.isArray(o["x-roles"]) && S.me && o["x-roles"].includes(S.me.role));
  }

  function rolesFor(path, method) {
    const o = op(path, method);
    return o && Array.isArray(o["x-roles"]) ? o["x-roles"].join(", ") : "?";
  }

  const has = {
    episodes: () => !!op("/v1/episodes", "get"),
    episodeVerdict: () => !!op("/v1/episodes/{episode_id}/verdict", "post"),
    releaseVerdict: () => {
      const s = S.doc && S.doc.components && S.doc.components.schemas && S.doc.components.schemas.ReleaseRequest;
      return !!(s && s.properties && s.properties.verdict);
    },
  };
  const may = {
    read: () => S.perms.has("read"),
    freeze: () => roleMay("/v1/agents/{agent_id}/freeze", "post"),
    release: () => roleMay("/v1/agents/{agent_id}/release", "post"),
    decide: () => roleMay("/v1/approvals/{approval_id}/approve", "post"),
    episodeVerdict: () => has.episodeVerdict() && roleMay("/v1/episodes/{episode_id}/verdict", "post"),
  };

  // ------------------------------------------------------------------ signing in and out
  function storeToken(t) {
    S.token = t;
    try {
      sessionStorage.setItem(TOKEN_KEY, t);
    } catch (e) { /* storage refused: the token lives in this page only */ }
  }

  function takeFragmentToken() {
    const m = /^#token=([^&]*)/.exec(location.hash);
    if (!m) return null;
    let t = "";
    try {
      t = decodeURIComponent(m[1]);
    } catch (e) {
      t = "";
    }
    // out of the address bar (and this history entry) before anything else happens
    history.replaceState(null, "", location.pathname + location.search + "#/");
    return t || null;
  }

  function showLogin(message) {
    S.me = null;
    $("nav").hidden = true;
    $("signout").hidden = true;
    $("who").replaceChildren();
    $("view").replaceChildren();
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  function signOut(message) {
    S.token = null;
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* nothing stored */ }
    S.gen++;
    S.view = null;
    showLogin(message || "");
  }

  async function signIn(token) {
    S.token = token;
    let me;
    try {
      me = await api("GET", "/v1/whoami", undefined, { anonymous: false });
    } catch (e) {
      if (e.status !== 401) signOut("Cannot sign in: " + e.line());
      return;
    }
    storeToken(token);
    S.me = me;
    S.perms = new Set(Array.isArray(me.permissions) ? me.permissions : []);
    try {
      S.doc = await api("GET", "/v1/openapi.json", undefined, { anonymous: true });
    } catch (e) {
      S.doc = null;
      banner("The API document could not be read (" + e.line() + "): actions are not offered.");
    }
    $("login").hidden = true;
    $("nav").hidden = false;
    $("signout").hidden = false;
    $("who").replaceChildren("Signed in as ", h("strong", {}, text(me.name)), " · role ", h("strong", {}, text(me.role)));
    route();
  }

  function banner(message) {
    const b = $("banner");
    b.textContent = message || "";
    b.hidden = !message;
  }

  // ------------------------------------------------------------------ routing
  function route() {
    const handed = takeFragmentToken();
    if (handed !== null) {
      signIn(handed);
      return;
    }
    if (!S.me) return;
    banner("");
    const parts = location.hash.replace(/^#\/?/, "").split("/");
    let arg = null;
    try {
      arg = parts.length > 1 ? decodeURIComponent(parts.slice(1).join("/")) : null;
    } catch (e) {
      arg = null;
    }
    const name = parts[0] || "overview";
    const views = { overview: viewOverview, incident: viewIncident, agent: viewAgent, approvals: viewApprovals };
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.dataset.view === name) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const root = $("view");
    root.replaceChildren();
    S.gen++;
    const gen = S.gen;
    if (!may.read()) {
      root.append(h("h1", { tabindex: "-1" }, "Nothing to show for this role"),
        h("p", { class: "note" }, "A token of role " + text(S.me.role) + " cannot read agents, breakers or " +
          "incidents; the console needs a viewer, analyst or lead token."));
      S.view = null;
      return;
    }
    const build = views[name] && (name === "overview" || name === "approvals" || arg) ? views[name] : null;
    if (build === null) {
      root.append(h("h1", { tabindex: "-1" }, "No such page"), h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
      S.view = null;
      return;
    }
    const view = build(root, arg, gen);
    S.view = view;
    const heading = root.querySelector("h1");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
    refresh();
  }

  async function refresh() {
    const view = S.view;
    if (!view || S.busy) return;
    S.busy = true;
    try {
      await view.refresh();
      const d = new Date();
      $("updated").textContent = "Updated " + utcText(d) + " (" + localText(d) + "), every " + POLL_MS / 1000 + " s";
    } finally {
      S.busy = false;
    }
  }

  function alive(gen) {
    return gen === S.gen;
  }

  async function load(path) {
    // [data, null] or [null, ApiError]
    try {
      return [await api("GET", path), null];
    } catch (e) {
      return [null, e instanceof ApiError ? e : new ApiError(0, "error", oneLine(e && e.message))];
    }
  }

  function errLine(e) {
    return h("p", { class: "error", role: "alert" }, e.line());
  }

  function table(headers, rows, empty) {
    if (!rows.length) return h("p", { class: "empty" }, empty);
    return h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col", class: x.endsWith("#") ? "num" : null },
        x.replace(/#$/, ""))))),
      h("tbody", {}, rows)));
  }

  function td(content, cls) {
    return h("td", { class: cls || null }, content);
  }

  function panel(title, ...body) {
    return h("section", { class: "panel", "aria-label": title }, h("h2", {}, title), ...body);
  }

  // ------------------------------------------------------------------ actions (each one API call)
  function resultBox() {
    return h("p", { class: "result", role: "status", "aria-live": "polite", tabindex: "-1" });
  }

  function say(box, ok, message) {
    box.className = "result " + (ok ? "okmsg" : "error");
    box.textContent = oneLine(message);
  }

  async function act(box, button, method, path, body, done) {
    button.disabled = true;
    say(box, true, "Sending…");
    try {
      const res = await api(method, path, body);
      done(res);
    } catch (e) {
      if (e.code === "two_person_rule") {
        box.className = "result waiting";
        box.textContent = "Waiting for a second lead: " + oneLine(e.message) + " (" + e.status + " " + e.code + ")";
      } else say(box, false, e instanceof ApiError ? e.line() : oneLine(e && e.message));
    } finally {
      button.disabled = false;
    }
  }

  function reasonInput(label, id) {
    return h("label", { class: "grow", for: id }, label,
      h("input", { id, type: "text", name: "reason", required: true, maxlength: "1000", autocomplete: "off" }));
  }

  let seq = 0;
  const uid = (p) => p + "-" + (++seq);

  function decided(where, message) {
    // an act that changes what the panel offers: show the outcome, re-render the panel, keep keyboard focus
    say(where.box, true, message);
    shown.delete(where.container);
    refreshSoon(() => where.box.focus());
  }

  function releaseForm(where, agentId, incidentId, incident) {
    const box = where.box;
    const rid = uid("release-reason");
    const withVerdict = has.releaseVerdict();
    const verdict = withVerdict ? h("fieldset", {}, h("legend", {}, "Verdict"),
      ["benign", "confirmed"].map((v) => {
        const id = uid("verdict-" + v);
        return h("label", { for: id }, h("input", { id, type: "radio", name: "verdict", value: v }), v);
      })) : null;
    const button = h("button", { type: "submit", class: "danger" }, may.release() ? "Release to probation"
      : "Release (lead only)");
    const form = h("form", { class: "act", "aria-label": "Release" }, verdict, reasonInput("Reason (audited)", rid),
      button);
    const notes = [];
    if (!may.release()) {
      notes.push(h("p", { class: "note" }, "Releasing needs the role " + rolesFor("/v1/agents/{agent_id}/release",
        "post") + "; your role is " + text(S.me.role) + ", so the API will refuse it."));
    } else if (incident && incident.manual && incident.severity === "critical" && incident.frozen_by === S.me.name) {
      notes.push(h("p", { class: "waiting" }, "Waiting for a second lead: you froze this critical incident, so " +
        "another lead releases it (two-person rule)."));
    }
    if (!withVerdict) notes.push(h("p", { class: "muted" }, "This worker's API takes no verdict with a release."));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const body = { reason: form.querySelector("input[name=reason]").value, incident_id: incidentId };
      const chosen = form.querySelector("input[name=verdict]:checked");
      if (chosen) body.verdict = chosen.value;
      act(box, button, "POST", "/v1/agents/" + enc(agentId) + "/release", body, (res) => {
        decided(where, "Released by " + text(res.released_by) + (res.verdict ? " with verdict " + res.verdict : "") +
          ": " + text(res.agent_id) + " is released to probation (" + text(res.state) + ")" +
          (res.published === false ? "; not yet confirmed published" : ""));
      });
    });
    return h("div", {}, h("h3", {}, "Release"), notes, form);
  }

  function freezeForm(where, agentId) {
    const box = where.box;
    const rid = uid("freeze-reason");
    const sid = uid("freeze-severity");
    const severity = h("select", { id: sid, name: "severity" },
      ["high", "medium", "critical"].map((s) => h("option", { value: s }, s)));
    const button = h("button", { type: "submit", class: "danger" }, "Freeze");
    const form = h("form", { class: "act", "aria-label": "Freeze" }, reasonInput("Reason (audited)", rid),
      h("label", { for: sid }, "Severity", severity), button);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      act(box, button, "POST", "/v1/agents/" + enc(agentId) + "/freeze",
        { reason: form.querySelector("input[name=reason]").value, severity: severity.value }, (res) => {
          decided(where, "Frozen by " + text(res.frozen_by) + ", incident " + text(res.incident_id));
        });
    });
    return h("div", {}, h("h3", {}, "Freeze"), form);
  }

  function decideForm(a) {
    const box = resultBox();
    const rid = uid("decide-reason");
    const tid = uid("decide-ttl");
    const approve = h("button", { type: "submit", value: "approve" }, "Approve");
    const deny = h("button", { type: "submit", value: "deny", class: "danger" }, "Deny");
    const ttl = h("input", { id: tid, type: "number", name: "ttl_s", min: "1", step: "1", placeholder: "900" });
    const form = h("form", { class: "act", "aria-label": "Decide " + a.approval_id }, reasonInput("Reason", rid),
      h("label", { for: tid }, "Valid for (s)", ttl), approve, deny);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const which = ev.submitter && ev.submitter.value === "deny" ? "deny" : "approve";
      const body = { reason: form.querySelector("input[name=reason]").value };
      if (which === "approve" && ttl.value) body.ttl_s = Number(ttl.value);
      act(box, which === "deny" ? deny : approve, "POST", "/v1/approvals/" + enc(a.approval_id) + "/" + which, body,
        (res) => {
          say(box, true, (which === "deny" ? "Denied" : "Approved") + " by " + text(res.decided_by) +
            (res.valid_until ? ", valid until " + utcText(toDate(res.valid_until) || new Date()) : ""));
          refreshSoon();
        });
    });
    return h("div", {}, form, box);
  }

  function episodeVerdictForm(ep) {
    const box = resultBox();
    const rid = uid("ep-reason");
    const fs = h("fieldset", {}, h("legend", {}, "Verdict"), ["benign", "confirmed"].map((v) => {
      const id = uid("ep-verdict-" + v);
      return h("label", { for: id }, h("input", { id, type: "radio", name: "verdict", value: v, required: true }), v);
    }));
    const button = h("button", { type: "submit" }, "Record verdict");
    const form = h("form", { class: "act", "aria-label": "Verdict on " + ep.episode_id }, fs,
      reasonInput("Reason", rid), button);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const chosen = form.querySelector("input[name=verdict]:checked");
      act(box, button, "POST", "/v1/episodes/" + enc(ep.episode_id) + "/verdict",
        { verdict: chosen ? chosen.value : "", reason: form.querySelector("input[name=reason]").value }, (res) => {
          say(box, true, "Verdict " + text(res.verdict) + " recorded by " + text(res.by) + " on " + text(res.episode_id));
          refreshSoon();
        });
    });
    return h("div", {}, form, box);
  }

  function refreshSoon(then) {
    setTimeout(async () => {
      await refresh();
      if (then) then();
    }, 300);
  }

  // ------------------------------------------------------------------ shared pieces
  function bySeverityThenNewest(key) {
    return (a, b) => (SEVERITY_RANK[b.severity] || 0) - (SEVERITY_RANK[a.severity] || 0) ||
      String(b[key] || "").localeCompare(String(a[key] || ""));
  }

  function reasonsText(r) {
    // an episode's top reasons: [{code, count}] (also [[code, count]] or {code: count}); the first three
    let items = [];
    if (Array.isArray(r)) {
      items = r.map((x) => Array.isArray(x) ? [x[0], x[1]]
        : (x && typeof x === "object") ? [x.code || x.reason || x.feature, x.count] : [x, null]);
    } else if (r && typeof r === "object") items = Object.entries(r);
    const shown = items.slice(0, 3).map(([c, n]) => text(c) + (typeof n === "number" && n > 1 ? " ×" + n : ""));
    return shown.join(", ") + (items.length > 3 ? ", +" + (items.length - 3) + " more" : "");
  }

  function verdictText(v) {
    if (!v) return "—";
    if (typeof v === "string") return v;
    return text(v.verdict) + (v.by ? " by " + v.by : "");
  }

  function subRow(cols, key, summary, form) {
    // the form of a listed item, on its own full-width row under it (a table cell is too narrow for it)
    return h("tr", { class: "sub", "data-for": key }, h("td", { colspan: String(cols) },
      h("details", { class: "inline" }, h("summary", {}, summary), form)));
  }

  function episodeHead(withAgent) {
    return ["Severity", withAgent ? "Agent" : "State", "Updated", "Actions#", "Top reasons", "Incidents", "Verdict",
      "Episode"];
  }

  function episodeRows(list, withAgent) {
    const cols = episodeHead(withAgent).length;
    return list.flatMap((ep) => {
      const incidents = Array.isArray(ep.incidents) ? ep.incidents.map(String) : [];
      const rows = [h("tr", { "data-episode": String(ep.episode_id) },
        td(sev(ep.severity)),
        withAgent ? td(link("agent", String(ep.agent_id)), "agent") : td(text(ep.state)),
        td([when(ep.updated), h("span", { class: "local" }, ["opened ", utcOrText(ep.opened)])], "time"),
        td(num(ep.actions), "num"),
        td(reasonsText(ep.reasons)),
        td(incidents.length ? incidents.map((i, n) => [n ? h("br") : null, link("incident", i)]) : "—", "nowrap"),
        td(verdictText(ep.verdict)),
        td(h("span", { class: "id" }, text(ep.episode_id)), "nowrap"))];
      if (may.episodeVerdict() && !ep.verdict) {
        rows.push(subRow(cols, String(ep.episode_id), "Record a verdict on this episode…", episodeVerdictForm(ep)));
      }
      return rows;
    });
  }

  function utcOrText(v) {
    const d = toDate(v);
    return d === null ? text(v) : utcText(d);
  }

  async function episodesInto(box, query, withAgent, empty) {
    if (!has.episodes()) {
      fill(box, "absent", () => h("p", { class: "empty" },
        "Alert episodes are not served by this worker (its API has no /v1/episodes)."));
      return;
    }
    const [data, err] = await load("/v1/episodes?" + query);
    if (err) return fill(box, "err:" + err.line(), () => errLine(err));
    const list = (data && Array.isArray(data.episodes) ? data.episodes : []).slice().sort(bySeverityThenNewest("updated"));
    fill(box, JSON.stringify(list) + may.episodeVerdict(), () => table(episodeHead(withAgent),
      episodeRows(list, withAgent), empty));
  }

  function approvalHead(withAgent) {
    return ["Requested", withAgent ? "Agent" : null, "Action", "Destinations", "Sensitivity", "Records#", "Why held",
      "State", "Request"].filter((x) => x !== null);
  }

  function approvalRows(list, withAgent) {
    const cols = approvalHead(withAgent).length;
    return list.flatMap((a) => {
      const rows = [h("tr", { "data-approval": String(a.approval_id) },
        td(when(a.requested_at), "time"),
        withAgent ? td(link("agent", String(a.agent_id)), "agent") : null,
        td([text(a.tool), " · ", text(a.action), h("br"), h("span", { class: "mono" }, text(a.resource))], "wrap"),
        td(Array.isArray(a.destinations) ? a.destinations.map(String).join(", ") || "—" : "—", "wrap"),
        td(text(a.sensitivity)),
        td(num(a.max_records), "num"),
        td(Array.isArray(a.reasons) ? a.reasons.map(String).join("; ") : "—"),
        td([text(a.state), a.decided_by ? " by " + a.decided_by : "",
          a.valid_until ? [" until ", when(a.valid_until)] : ""]),
        td(h("span", { class: "id" }, text(a.approval_id)), "nowrap"))];
      if (a.state === "pending" && may.decide()) {
        rows.push(subRow(cols, String(a.approval_id), "Approve or deny this request…", decideForm(a)));
      }
      return rows;
    });
  }

  async function approvalsInto(box, query, withAgent, empty) {
    const [data, err] = await load("/v1/approvals?" + query);
    if (err) return fill(box, "err:" + err.line(), () => errLine(err));
    const list = data && Array.isArray(data.approvals) ? data.approvals : [];
    fill(box, JSON.stringify(list) + may.decide(), () => table(approvalHead(withAgent), approvalRows(list, withAgent),
      empty));
  }

  // ------------------------------------------------------------------ views
  function viewOverview(root, _arg, gen) {
    const frozen = h("div", {}, h("p", { class: "empty" }, "Loading…"));
    const episodes = h("div", {}, h("p", { class: "empty" }, "Loading…"));
    const probation = h("div", {}, h("p", { class: "empty" }, "Loading…"));
    const approvals = h("div", {}, h("p", { class: "empty" }, "Loading…"));
    root.append(h("h1", {}, "Triage"),
      panel("Frozen agents", h("p", { class: "muted" }, "Open breakers, most severe and newest first."), frozen),
      panel("Open alert episodes", h("p", { class: "muted" }, "Alerts grouped per agent until it is quiet, most " +
        "severe and most recently active first."), episodes),
      panel("Pending approvals", h("p", { class: "muted" }, "Actions held before they happened, waiting for an " +
        "analyst."), approvals),
      panel("On probation", h("p", { class: "muted" }, "Released agents, watched with tighter thresholds."),
        probation));
    return {
      name: "overview",
      refresh: async () => {
        const [[open, e1], [half, e2]] = await Promise.all([load("/v1/breakers?state=open&limit=1000"),
          load("/v1/breakers?state=half_open&limit=1000")]);
        if (!alive(gen)) return;
        if (e1) fill(frozen, "err:" + e1.line(), () => errLine(e1));
        else {
          const list = (open.breakers || []).slice().sort(bySeverityThenNewest("since"));
          fill(frozen, JSON.stringify(list), () => table(["Severity", "Agent", "Frozen since", "Why", "By", "Incident"],
            list.map((b) => h("tr", {}, td(sev(b.severity)), td(link("agent", String(b.agent_id)), "agent"),
              td(when(b.since), "time"), td(text(b.why)), td(text(b.by), "nowrap"),
              td(b.incident_id ? link("incident", String(b.incident_id)) : "—", "nowrap"))), "No agent is frozen."));
        }
        if (e2) fill(probation, "err:" + e2.line(), () => errLine(e2));
        else {
          const list = half.breakers || [];
          fill(probation, JSON.stringify(list), () => table(["Agent", "Released", "By", "Probation until", "Incident"],
            list.map((b) => h("tr", {}, td(link("agent", String(b.agent_id)), "agent"), td(when(b.since), "time"),
              td(text(b.by)), td(when(b.probation_until_t), "time"),
              td(b.incident_id ? link("incident", String(b.incident_id)) : "—"))), "No agent is on probation."));
        }
        await Promise.all([episodesInto(episodes, "state=open&limit=200", true, "No open alert episodes."),
          approvalsInto(approvals, "state=pending&limit=200", true, "No action waits for approval.")]);
      },
    };
  }

  function viewApprovals(root, _arg, gen) {
    const sid = uid("approvals-state");
    const select = h("select", { id: sid }, ["pending", "approved", "denied", "expired"].map((s) =>
      h("option", { value: s }, s)));
    const box = h("div", {}, h("p", { class: "empty" }, "Loading…"));
    select.addEventListener("change", () => {
      shown.delete(box);
      refresh();
    });
    root.append(h("h1", {}, "Approval requests"),
      panel("Requests", h("form", { class: "act", "aria-label": "Filter" },
        h("label", { for: sid }, "State", select)), box));
    return {
      name: "approvals",
      refresh: async () => {
        if (!alive(gen)) return;
        await approvalsInto(box, "state=" + enc(select.value) + "&limit=500", true,
          "No " + select.value + " approval requests.");
      },
    };
  }

  function traceTable(trace, triggerId) {
    const rows = trace.slice().reverse().map((e) => {
      const trigger = e.event_id === triggerId;
      const raised = RAISED.has(e.severity);
      const dests = Array.isArray(e.destinations) ? e.destinations.map(String) : [];
      const classes = Array.isArray(e.destination_classes) ? e.destination_classes.map(String) : [];
      return h("tr", { class: trigger ? "trigger" : raised ? "raised" : null },
        td([trigger ? h("span", { class: "tag tag-trigger" }, "trigger") : null,
          !trigger && raised ? h("span", { class: "tag tag-raised" }, "raised the score") : null]),
        td([when(e.ts), h("span", { class: "event mono" }, text(e.event_id))], "time"),
        td(text(e.tool)), td(text(e.action)), td(h("span", { class: "mono" }, text(e.resource)), "wrap"),
        td(dests.length ? [dests.join(", "), classes.length ? h("span", { class: "local" }, " (" + classes.join(", ") + ")")
          : null] : (e.destination_count ? num(e.destination_count) + " destinations" : "—"), "wrap"),
        td(text(e.sensitivity)), td(num(e.records), "num"), td(num(e.score, 3), "num"), td(sev(e.severity)));
    });
    return table(["Mark", "Time · event", "Tool", "Action", "Resource", "Destinations", "Sensitivity", "Records#",
      "Score#", "Severity"], rows, "The incident carries no trace.");
  }

  function attribution(a) {
    if (!a || typeof a !== "object") return h("p", { class: "empty" }, "No attribution.");
    const list = (v) => Array.isArray(v) && v.length ? h("ul", { class: "plain" }, v.map((x) => h("li", {}, text(x))))
      : "—";
    return h("dl", { class: "facts" },
      h("dt", {}, "Operator"), h("dd", {}, text(a.operator_id)),
      h("dt", {}, "Requested by"), h("dd", {}, text(a.requested_by)),
      h("dt", {}, "Instruction hash"), h("dd", { class: "mono" }, text(a.instruction_hash)),
      h("dt", {}, "Task"), h("dd", { class: "mono" }, text(a.task_id)),
      h("dt", {}, "Task's events"), h("dd", { class: "mono" }, list(a.task_events)),
      h("dt", {}, "Parent chain"), h("dd", { class: "mono" }, list(a.parent_chain)),
      h("dt", {}, "Operators seen"), h("dd", {}, list(a.operators_seen)),
      h("dt", {}, "Requesters seen"), h("dd", {}, list(a.requesters_seen)),
      h("dt", {}, "Instructions seen"), h("dd", { class: "mono" }, list(a.instruction_hashes_seen)));
  }

  function viewIncident(root, iid, gen) {
    const head = h("div", {}, h("p", { class: "empty" }, "Loading…"));
    const why = h("div", {});
    const attr = h("div", {});
    const actions = h("div", {});
    const where = { container: actions, box: resultBox() };
    const trace = h("div", {});
    root.append(h("h1", {}, "Incident ", h("span", { class: "id" }, iid)), head,
      h("div", { class: "grid" }, panel("Why it was frozen", why), panel("Attribution", attr)),
      panel("Decide", actions, where.box),
      panel("Trace", h("p", { class: "muted" }, "The agent's last actions, newest first. Marked: the trigger, and " +
        "the actions that raised the score (severity medium or above)."), trace));
    return {
      name: "incident",
      refresh: async () => {
        const [inc, err] = await load("/v1/incidents/" + enc(iid));
        if (!alive(gen)) return;
        if (err) {
          fill(head, "err:" + err.line(), () => errLine(err));
          return;
        }
        const agentId = String(inc.agent_id);
        const [agent, aerr] = await load("/v1/agents/" + enc(agentId));
        if (!alive(gen)) return;
        const b = agent && agent.breaker ? agent.breaker : null;
        const current = b && b.incident_id === inc.incident_id;
        fill(head, JSON.stringify([inc.incident_id, inc.severity, inc.score, b, aerr && aerr.line()]), () =>
          h("section", { class: "panel", "aria-label": "Summary" }, h("dl", { class: "facts" },
            h("dt", {}, "Agent"), h("dd", {}, link("agent", agentId)),
            h("dt", {}, "Severity"), h("dd", {}, sev(inc.severity), " score ", num(inc.score, 3)),
            h("dt", {}, "Opened"), h("dd", {}, when(inc.opened_at)),
            h("dt", {}, "Frozen by"), h("dd", {}, inc.frozen_by ? text(inc.frozen_by) + " (by hand)"
              : "flowbreaker (automatic)"),
            h("dt", {}, "Trigger"), h("dd", { class: "mono" }, text(inc.trigger_event_id)),
            h("dt", {}, "Breaker now"), h("dd", {}, b ? [stateBadge(b.state), current ? " for this incident"
              : b.incident_id ? [" for ", link("incident", String(b.incident_id))] : "",
            b.state === "half_open" && b.probation_until ? [" until ", when(b.probation_until)] : ""]
              : aerr ? errLine(aerr) : "—"),
            h("dt", {}, "Model"), h("dd", {}, text(inc.model_version)))));
        const reasons = Array.isArray(inc.reasons) ? inc.reasons : [];
        fill(why, JSON.stringify(reasons), () => reasons.length ? h("ol", { class: "reasons" }, reasons.map((r) =>
          h("li", {}, text(r && r.detail), r && r.feature ? h("span", { class: "feature" }, "(" + r.feature + ")")
            : null))) : h("p", { class: "empty" }, "No reasons recorded."));
        fill(attr, JSON.stringify(inc.attribution || null), () => attribution(inc.attribution));
        const open = !!(b && b.state === "open" && current);
        fill(actions, JSON.stringify([open, b && b.state]), () => {
          if (open && (may.release() || may.freeze())) return releaseForm(where, agentId, String(inc.incident_id), inc);
          if (open) return h("p", { class: "muted" }, "The agent is frozen for this incident; your role (" +
            text(S.me.role) + ") reads only.");
          return h("p", { class: "muted" }, b ? "This incident is not the agent's open one: nothing to release here."
            : "The agent's state is not available.");
        });
        const tr = Array.isArray(inc.trace) ? inc.trace : [];
        fill(trace, JSON.stringify([tr.length, tr.length ? tr[tr.length - 1].event_id : null]), () =>
          traceTable(tr, inc.trigger_event_id));
      },
    };
  }

  function viewAgent(root, agentId, gen) {
    const state = h("div", {}, h("p", { class: "empty" }, "Loading…"));
    const actions = h("div", {});
    const where = { container: actions, box: resultBox() };
    const decisions = h("div", {});
    const baseline = h("div", {});
    const manifest = h("div", {});
    const approvals = h("div", {});
    const episodes = h("div", {});
    root.append(h("h1", {}, "Agent ", h("span", { class: "id" }, agentId)), state,
      panel("Decide", actions, where.box),
      panel("Recent decisions", h("p", { class: "muted" }, "Newest first."), decisions),
      panel("Open approval requests", approvals),
      panel("Alert episodes", episodes),
      h("div", { class: "grid" }, panel("Baseline", baseline), panel("Intended-use manifest", manifest)));
    return {
      name: "agent",
      refresh: async () => {
        const [a, err] = await load("/v1/agents/" + enc(agentId));
        if (!alive(gen)) return;
        if (err) {
          fill(state, "err:" + err.line(), () => errLine(err));
          return;
        }
        const b = a.breaker || {};
        const risk = a.risk || {};
        fill(state, JSON.stringify([b, risk, a.operator_id]), () => h("section", { class: "panel", "aria-label": "Breaker" },
          h("dl", { class: "facts" },
            h("dt", {}, "Breaker"), h("dd", {}, stateBadge(b.state)),
            h("dt", {}, "Incident"), h("dd", {}, b.incident_id ? link("incident", String(b.incident_id)) : "—"),
            h("dt", {}, "Opened"), h("dd", {}, b.opened_at ? when(b.opened_at) : "—"),
            h("dt", {}, "Probation until"), h("dd", {}, b.probation_until ? when(b.probation_until) : "—"),
            h("dt", {}, "Trips"), h("dd", {}, num(b.trips)),
            h("dt", {}, "Risk"), h("dd", {}, num(risk.value, 3), " of a budget of ", num(risk.budget, 3),
              risk.as_of ? [", as of ", when(risk.as_of)] : ""),
            h("dt", {}, "Operator"), h("dd", {}, text(a.operator_id)),
            h("dt", {}, "Model"), h("dd", {}, text(a.model_version)))));
        fill(actions, JSON.stringify([b.state, b.incident_id]), () => {
          if (b.state === "open" && (may.release() || may.freeze())) return releaseForm(where, agentId, String(b.incident_id));
          if (b.state !== "open" && may.freeze()) return freezeForm(where, agentId);
          return h("p", { class: "muted" }, "Your role (" + text(S.me.role) + ") reads only.");
        });
        const last = Array.isArray(a.last_decisions) ? a.last_decisions : [];
        fill(decisions, JSON.stringify(last), () => table(["Time", "Tool", "Action", "Resource", "Destinations",
          "Sensitivity", "Records#", "Score#", "Severity", "Event"], last.map((e) => h("tr", {
          class: RAISED.has(e.severity) ? "raised" : null },
        td(when(e.ts), "time"), td(text(e.tool)), td(text(e.action)), td(h("span", { class: "mono" }, text(e.resource))),
        td(Array.isArray(e.destination_classes) && e.destination_count ? num(e.destination_count) + " (" +
          e.destination_classes.map(String).join(", ") + ")" : "—"),
        td(text(e.sensitivity)), td(num(e.records), "num"), td(num(e.score, 3), "num"), td(sev(e.severity)),
        td(h("span", { class: "id" }, text(e.event_id))))), "No decisions yet."));
        const base = a.baseline || {};
        const feats = base.features && typeof base.features === "object" ? Object.entries(base.features) : [];
        fill(baseline, JSON.stringify(base), () => [h("p", { class: "muted" }, "Learned from about " +
          num(base.observations, 1) + " observations: the typical value of each feature and its 95th percentile."),
        table(["Feature", "Typical#", "p95#"], feats.map(([k, v]) => h("tr", {}, td(h("span", { class: "mono" }, k)),
          td(num(v && v.typical, 2), "num"), td(num(v && v.p95, 2), "num"))), "No baseline yet.")]);
        fill(manifest, JSON.stringify(a.manifest === undefined ? "absent" : a.manifest), () => {
          if (a.manifest === undefined) return h("p", { class: "empty" }, "Not reported by this worker.");
          if (a.manifest === null) return h("p", { class: "empty" }, "No intended-use manifest covers this agent.");
          const m = a.manifest;
          const clauses = m.clauses && typeof m.clauses === "object" ? Object.entries(m.clauses) : [];
          return [h("p", {}, "In force: ", h("span", { class: "mono" }, text(m.label))),
            h("dl", { class: "facts" }, clauses.map(([name, keys]) => [h("dt", {}, name), h("dd", {},
              keys && typeof keys === "object" ? Object.entries(keys).map(([k, v]) => h("div", {},
                h("span", { class: "mono" }, k), " = ", Array.isArray(v) ? v.map(String).join(", ") : text(v)))
                : text(keys))]))];
        });
        await Promise.all([
          approvalsInto(approvals, "state=pending&agent_id=" + enc(agentId), false, "No pending request."),
          episodesInto(episodes, "agent_id=" + enc(agentId) + "&limit=50", false, "No alert episodes.")]);
      },
    };
  }

  // ------------------------------------------------------------------ start
  function tickClock() {
    const d = new Date();
    let zone = "";
    try {
      zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) { /* no zone name */ }
    $("clock").textContent = "Now " + utcText(d) + " · " + localText(d, true) + (zone ? " (" + zone + ")" : "");
  }

  function start() {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("token").value.trim();
      $("token").value = "";
      if (!t) {
        $("login-error").textContent = "Paste a token first.";
        return;
      }
      $("login-error").textContent = "";
      signIn(t);
    });
    $("signout").addEventListener("click", () => signOut("Signed out."));
    window.addEventListener("hashchange", route);
    tickClock();
    setInterval(tickClock, 1000);
    setInterval(() => {
      if (!document.hidden) refresh();
    }, POLL_MS);
    const handed = takeFragmentToken();
    let stored = null;
    try {
      stored = sessionStorage.getItem(TOKEN_KEY);
    } catch (e) { /* no storage */ }
    const t = handed || stored;
    if (t) signIn(t);
    else showLogin("");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
