/* Gatehouse report index: filter, sort and page the sessions table in the browser.
   Data comes from the JSON block in the page; request/exchange ids are looked up in
   ids/<shard>.js, loaded on demand with a script element (file:// pages cannot fetch).
   Rows are built with DOM methods and textContent only: recorded values are never HTML. */
(function () {
  "use strict";
  var PAGE = 100;
  var data = JSON.parse(document.getElementById("sessions-data").textContent);
  var form = document.getElementById("filters");
  var tbody = document.getElementById("rows");
  var pager = document.getElementById("pager");
  var statusLine = document.getElementById("status");
  var state = { user: "", from: null, until: null, session: "", rid: "", hit: null, ridPending: false,
                sort: "start", dir: -1, page: 0 };
  var shards = {};
  var waiting = {};

  data.forEach(function (r) {
    r._user = r.users.map(function (u) { return [u.email, u.subject, u.name].join(" "); }).join(" ").toLowerCase();
    r._start = r.start ? Date.parse(r.start) : NaN;
    r._end = r.end ? Date.parse(r.end) : r._start;
  });

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fmtInt(n) { return (n || 0).toLocaleString("en-US"); }
  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return "";
    if (ms < 1000) return Math.round(ms) + " ms";
    var s = ms / 1000;
    if (s < 60) return s.toFixed(1) + " s";
    var m = Math.floor(s / 60); s = Math.floor(s % 60);
    if (m < 60) return m + " min " + (s < 10 ? "0" : "") + s + " s";
    var h = Math.floor(m / 60); m = m % 60;
    return h + " h " + (m < 10 ? "0" : "") + m + " min";
  }
  function fmtTime(iso) { return iso ? iso.replace("T", " ").slice(0, 19) : ""; }
  // The same FNV-1a over UTF-16 code units as gatehouse.report.links.id_shard.
  function shardOf(id) {
    var h = 0x811c9dc5;
    for (var i = 0; i < id.length; i++) { h ^= id.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
    var s = (h % 256).toString(16);
    return s.length < 2 ? "0" + s : s;
  }
  function utc(value) {
    if (!value) return null;
    var t = Date.parse(value.length === 16 ? value + ":00Z" : value + "Z");
    return isNaN(t) ? null : t;
  }

  window.gatehouseIdShard = function (name, map) {
    shards[name] = map;
    (waiting[name] || []).forEach(function (f) { f(map); });
    delete waiting[name];
  };
  function withShard(name, f) {
    if (shards[name]) { f(shards[name]); return; }
    if (waiting[name]) { waiting[name].push(f); return; }
    waiting[name] = [f];
    var s = document.createElement("script");
    s.src = "ids/" + name + ".js";
    s.onerror = function () { delete waiting[name]; state.ridPending = false; render(); };
    document.head.appendChild(s);
  }
  function lookup(id) {
    state.hit = null;
    state.ridPending = !!id;
    if (!id) { render(); return; }
    withShard(shardOf(id), function (map) {
      if (state.rid !== id) return;
      state.hit = Object.prototype.hasOwnProperty.call(map, id) ? map[id] : null;
      state.ridPending = false;
      render();
    });
  }

  function keyOf(r, k) {
    switch (k) {
      case "user": return r._user;
      case "client": return r.clients.join(" ").toLowerCase();
      case "start": return r._start;
      case "models": return r.models.join(" ");
      case "tokens": return r.tokens_in + r.tokens_out;
      case "integrity": return (r.integrity.ok ? 1 : 0);
      case "id": return r.id.toLowerCase();
      default: return r[k] === null || r[k] === undefined ? -1 : r[k];
    }
  }
  function matches(r) {
    if (state.user && r._user.indexOf(state.user) < 0) return false;
    if (state.session && r.id.toLowerCase().indexOf(state.session) < 0) return false;
    if (state.from !== null && !(r._end >= state.from)) return false;
    if (state.until !== null && !(r._start <= state.until)) return false;
    if (state.rid) {
      if (state.ridPending || !state.hit || state.hit[2] !== r.id) return false;
    }
    return true;
  }

  function cell(tr, cls, content) {
    var td = el("td", cls);
    if (content instanceof Node) td.appendChild(content); else td.textContent = content === undefined ? "" : String(content);
    tr.appendChild(td);
    return td;
  }
  function userNode(r) {
    var span = el("span");
    if (!r.users.length) { span.appendChild(el("span", "muted", "anonymous")); return span; }
    r.users.forEach(function (u, i) {
      if (i) span.appendChild(document.createTextNode(", "));
      var s = el("span", "user", u.email || u.subject || "anonymous");
      s.title = u.subject || "";
      span.appendChild(s);
      if (u.email && u.subject && u.subject !== u.email) { span.appendChild(document.createTextNode(" ")); span.appendChild(el("span", "muted", u.subject)); }
    });
    return span;
  }
  function row(r) {
    var tr = el("tr", r.integrity.ok ? "" : "bad");
    var a = el("a");
    var href = r.href;
    if (state.hit && state.hit[2] === r.id) href = state.hit[0] + "#" + encodeURIComponent(state.hit[1]);
    a.href = href;
    a.appendChild(el("code", null, r.id.length > 20 ? r.id.slice(0, 19) + "…" : r.id));
    a.title = r.id;
    cell(tr, null, a);
    cell(tr, "wrap", userNode(r));
    cell(tr, "opt wrap", r.clients.join(", ") + (r.ci ? " · CI" : ""));
    var when = el("time", null, fmtTime(r.start).slice(0, 10));
    when.appendChild(el("span", "t", fmtTime(r.start).slice(11)));
    cell(tr, null, when);
    cell(tr, "num opt", fmtDuration(r.duration_ms));
    cell(tr, "num", r.exchanges + (r.agents ? " (" + r.agents + " sub)" : ""));
    cell(tr, "opt wrap", r.models.join(", "));
    var tok = cell(tr, "num opt", fmtInt(r.tokens_in) + " / " + fmtInt(r.tokens_out));
    tok.title = "cache read " + fmtInt(r.tokens_cache_read) + ", cache write " + fmtInt(r.tokens_cache_write);
    var mk = cell(tr, "num", r.masks);
    if (r.masks) mk.title = r.secrets + " distinct secret(s)";
    cell(tr, "num" + (r.blocked ? " warn" : ""), r.blocked);
    cell(tr, "num", r.approved + (r.held ? " (+" + r.held + " held)" : ""));
    cell(tr, "num opt" + (r.refused ? " warn" : ""), r.refused);
    // "verified (store keys)" is explained once, above the table.
    var integ = cell(tr, r.integrity.ok ? "good" : "bad", r.integrity.ok && r.integrity.checked ? "verified" : r.integrity.text);
    integ.title = r.integrity.text;
    return tr;
  }

  function render() {
    var rows = data.filter(matches);
    var k = state.sort, d = state.dir;
    rows.sort(function (a, b) {
      var x = keyOf(a, k), y = keyOf(b, k);
      if (x < y) return -d; if (x > y) return d;
      return a._start < b._start ? 1 : -1;
    });
    var pages = Math.max(1, Math.ceil(rows.length / PAGE));
    if (state.page >= pages) state.page = pages - 1;
    var frag = document.createDocumentFragment();
    rows.slice(state.page * PAGE, (state.page + 1) * PAGE).forEach(function (r) { frag.appendChild(row(r)); });
    tbody.textContent = "";
    tbody.appendChild(frag);
    renderPager(rows.length, pages);
    renderStatus(rows.length);
  }
  function renderStatus(n) {
    statusLine.textContent = "";
    if (state.rid) {
      if (state.ridPending) { statusLine.textContent = "Looking up " + state.rid + "…"; return; }
      if (!state.hit) { statusLine.textContent = "No exchange with id " + state.rid + " in this report."; return; }
      statusLine.appendChild(document.createTextNode("Id " + state.rid + " is exchange " + state.hit[1] + " "));
      var a = el("a", "jump", state.hit[2] ? "open the exchange in its session" : "open the audit event");
      a.href = state.hit[0] + "#" + encodeURIComponent(state.hit[1]);
      a.id = "rid-jump";
      statusLine.appendChild(a);
      return;
    }
    statusLine.textContent = n === data.length ? data.length.toLocaleString("en-US") + " sessions" :
      n.toLocaleString("en-US") + " of " + data.length.toLocaleString("en-US") + " sessions match";
  }
  function renderPager(n, pages) {
    pager.textContent = "";
    if (pages <= 1) return;
    function btn(label, page, disabled) {
      var b = el("button", "button", label);
      b.type = "button";
      b.disabled = disabled;
      b.addEventListener("click", function () { state.page = page; render(); window.scrollTo(0, 0); });
      pager.appendChild(b);
    }
    btn("« First", 0, state.page === 0);
    btn("‹ Previous", state.page - 1, state.page === 0);
    pager.appendChild(el("span", null, " Page " + (state.page + 1) + " of " + pages + " "));
    btn("Next ›", state.page + 1, state.page >= pages - 1);
    btn("Last »", pages - 1, state.page >= pages - 1);
  }

  var lastForm = null;
  function readForm() {
    // "change" follows "input" when the field loses focus (e.g. on a click on the result
    // link): re-rendering then would replace the link under the pointer.
    var now = [form.user.value, form.session.value, form.from.value, form.until.value, form.rid.value].join("\u0000");
    if (now === lastForm) return;
    lastForm = now;
    state.user = form.user.value.trim().toLowerCase();
    state.session = form.session.value.trim().toLowerCase();
    state.from = utc(form.from.value);
    state.until = utc(form.until.value);
    if (state.until !== null && form.until.value.length === 16) state.until += 59999;
    state.page = 0;
    var rid = form.rid.value.trim();
    if (rid !== state.rid) { state.rid = rid; lookup(rid); return; }
    render();
  }
  var timer = null;
  form.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(readForm, 120); });
  form.addEventListener("change", readForm);
  form.addEventListener("submit", function (e) { e.preventDefault(); readForm(); });
  form.addEventListener("reset", function () { setTimeout(readForm, 0); });

  document.querySelectorAll("th[data-key] button").forEach(function (b) {
    b.addEventListener("click", function () {
      var th = b.parentNode, k = th.getAttribute("data-key");
      if (state.sort === k) state.dir = -state.dir; else { state.sort = k; state.dir = (k === "id" || k === "user" || k === "client" || k === "models") ? 1 : -1; }
      document.querySelectorAll("th[data-key]").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
      render();
    });
  });

  // index.html#rid=req_… or #user=… pre-fills the filters (links from tickets, chat).
  if (location.hash.length > 1) {
    location.hash.slice(1).split("&").forEach(function (kv) {
      var i = kv.indexOf("="), k = decodeURIComponent(kv.slice(0, i)), v = decodeURIComponent(kv.slice(i + 1));
      if (i > 0 && form[k] && form[k].tagName === "INPUT") form[k].value = v;
    });
  }
  readForm();
})();
