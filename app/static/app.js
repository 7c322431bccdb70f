/* batchq pages: live updates and the creation form's helpers (no build step).
 *
 * Live updates: one EventSource per tab on /live/events. Each hint ("batch 7
 * changed") makes the page re-fetch the server-rendered regions marked
 * data-live-src (htmx swaps them in with a morph, so focus survives). At most
 * one re-fetch runs at a time; hints that arrive meanwhile fold into one more.
 * While the stream is down (or refused with 503) the page polls instead.
 */
(function () {
  "use strict";

  var POLL_MS = 2000;       // polling period while the stream is down
  var RETRY_MS = 15000;     // next stream attempt after the server refused one
  var MAX_HINTS = 20;       // more pending hints than this: just refresh everything

  var body = document.body;
  // Progress-only hints refresh at most this often (the table asks for 1 s: many keep it open).
  var ITEM_GAP_MS = Number(body.dataset.liveItemGap) || 300;
  // Any refresh starts at least this long after the one before started (the table asks for some:
  // while short batches rush by, every open table re-fetching at every change swamps the server).
  var GAP_MS = Number(body.dataset.liveGap) || 0;

  function setState(mode, text) {
    body.dataset.live = mode;
    var el = document.getElementById("live-state");
    if (el) { el.textContent = text; el.dataset.mode = mode; }
  }

  // --- the CSRF token of forms rendered for every viewer ----------------------

  // The live table is rendered once and shared by everyone who watches it (app/live/shared_render.py),
  // so its forms carry no token of their own: each takes the page's as it is submitted. This listener
  // runs in the capture phase, before htmx reads the form.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var posts = (form.getAttribute("method") || "").toLowerCase() === "post" || form.hasAttribute("hx-post");
    if (!posts || form.querySelector("input[name=csrf_token]")) return;
    var meta = document.querySelector("meta[name=csrf-token]");
    if (!meta) return;
    var input = document.createElement("input");
    input.type = "hidden";
    input.name = "csrf_token";
    input.value = meta.content;
    form.appendChild(input);
  }, true);

  // --- re-fetching the live regions ------------------------------------------

  var busy = false;
  var pending = null;     // {all: bool, hints: [], itemOnly: bool}
  var lastDone = 0;
  var lastStart = 0;
  var gapTimer = null;

  function note(hint) {
    pending = pending || {all: false, hints: [], itemOnly: true};
    if (!hint) { pending.all = true; pending.itemOnly = false; return; }
    if (hint.kind !== "item") pending.itemOnly = false;
    if (pending.hints.length >= MAX_HINTS) pending.all = true; else pending.hints.push(hint);
  }

  function wants(el, batch) {
    var mine = el.dataset.liveBatch;
    if (batch.all || !mine) return true;
    return batch.hints.some(function (hint) {
      if (hint.batch_id == null || String(hint.batch_id) === mine) return true;
      // Another batch's news can move this one's queue position, never its log.
      return hint.kind !== "item" && !el.dataset.liveAppend;
    });
  }

  // Each region is its own request source: htmx queues at most one request behind another of the
  // same source and drops the rest, so regions sharing the body would lose all but two of a refresh.
  function fetchRegion(el) {
    var url = el.dataset.liveSrc;
    if (el.dataset.liveAppend) {
      var last = el.lastElementChild;
      url += (url.indexOf("?") < 0 ? "?" : "&") + "after=" + (last ? last.dataset.logId || 0 : 0);
      return htmx.ajax("GET", url, {source: el, target: el, swap: "beforeend"});
    }
    // The newest hint the page was told of: the server hands it a shared render at least that new
    // without asking Redis for the counter on every re-fetch (app/views/batches.py).
    var headers = lastId ? {"X-Live-Event-Id": lastId} : {};
    return htmx.ajax("GET", url, {source: el, target: el, swap: "innerMorph", headers: headers});
  }

  // refresh(hint) notes a hint (null: everything) and runs; refresh() only runs what is pending.
  // While a row is being dragged (table.js) the table is not replaced under it: hints wait
  // until the drop or the cancel, which fires "batchq:drag-end".
  function refresh(hint) {
    if (hint !== undefined) note(hint);
    if (pending && body.dataset.dragging) { body.dataset.liveHeld = "true"; return; }
    if (!pending || busy || gapTimer) return;
    delete body.dataset.liveHeld;
    var now = Date.now();
    var wait = Math.max(pending.itemOnly ? lastDone + ITEM_GAP_MS - now : 0, lastStart + GAP_MS - now);
    if (wait > 0) {
      gapTimer = setTimeout(function () { gapTimer = null; refresh(); }, wait);
      return;
    }
    var batch = pending;
    pending = null;
    busy = true;
    lastStart = Date.now();
    var regions = Array.prototype.filter.call(document.querySelectorAll("[data-live-src]"), function (el) {
      return wants(el, batch);
    });
    Promise.allSettled(regions.map(fetchRegion)).then(function () {
      busy = false;
      lastDone = Date.now();
      if (pending) refresh();
    });
  }

  function refreshAll() { refresh(null); }

  document.addEventListener("batchq:drag-end", function () { refresh(); });

  // --- the stream and the polling fallback -------------------------------------

  var source = null, pollTimer = null, retryTimer = null;
  var lastId = body.dataset.lastEventId || "";

  function startPolling() {
    if (!pollTimer) pollTimer = setInterval(refreshAll, POLL_MS);
  }

  function stopPolling() {
    clearInterval(pollTimer);
    pollTimer = null;
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (!window.EventSource) { setState("polling", "polling"); startPolling(); return; }
    var url = body.dataset.liveUrl + (lastId ? "?last_event_id=" + encodeURIComponent(lastId) : "");
    source = new EventSource(url);
    source.onopen = function () { stopPolling(); setState("sse", "live"); };
    source.addEventListener("batchq", function (event) {
      if (event.lastEventId) lastId = event.lastEventId;
      var hint = null;
      try { hint = JSON.parse(event.data); } catch (e) { hint = null; }
      refresh(hint && hint.kind !== "catchup" && hint.kind !== "resync" ? hint : null);
    });
    source.onerror = function () {
      setState("polling", "polling");
      startPolling();
      // The browser retries a dropped stream by itself; a refused one (503, 401) it gives up on.
      if (source && source.readyState === EventSource.CLOSED) {
        source.close();
        source = null;
        retryTimer = setTimeout(connect, RETRY_MS);
      }
    };
  }

  // --- the creation form -------------------------------------------------------

  function initProfilePicker() {
    var list = document.getElementById("profile-list");
    if (!list) return;
    var filter = document.getElementById("profile-filter");
    var all = document.getElementById("profile-select-all");
    var count = document.getElementById("profile-count");
    var items = Array.prototype.slice.call(list.children);

    function visible() { return items.filter(function (li) { return !li.hidden; }); }
    function update() {
      var n = list.querySelectorAll("input:checked").length;
      count.textContent = n + " of " + items.length + " selected";
      var shown = visible();
      all.checked = shown.length > 0 && shown.every(function (li) { return li.firstElementChild.firstElementChild.checked; });
    }
    filter.addEventListener("input", function () {
      var q = filter.value.trim().toLowerCase();
      items.forEach(function (li) { li.hidden = q !== "" && li.dataset.name.indexOf(q) < 0; });
      update();
    });
    filter.addEventListener("keydown", function (event) {
      if (event.key === "Enter") event.preventDefault();   // filtering, not submitting
    });
    all.addEventListener("change", function () {
      visible().forEach(function (li) { li.firstElementChild.firstElementChild.checked = all.checked; });
      update();
    });
    list.addEventListener("change", update);
    update();
  }

  function initProcessorSelect() {
    var select = document.getElementById("processor");
    if (!select) return;
    var help = document.getElementById("processor-help");
    select.addEventListener("change", function () {
      document.querySelectorAll("fieldset.params").forEach(function (fs) {
        var on = fs.dataset.processor === select.value;
        fs.hidden = !on;
        fs.disabled = !on;
      });
      var option = select.options[select.selectedIndex];
      if (help && option) help.textContent = option.dataset.description || "";
    });
  }

  function initAutosubmit() {
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.requestSubmit(); });
    });
  }

  // --- times in the browser's own time zone ----------------------------------------
  // The server writes UTC into <time data-local-time="clock|short" datetime=ISO title="… UTC">: HH:MM, or
  // HH:MM:SS today and YYYY-MM-DD HH:MM before. Shown here in local time (the title keeps UTC, for hover),
  // again after every live swap (a mutation observer catches morphs, appends and text changed in place).

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function localText(at, style) {
    var clock = pad(at.getHours()) + ":" + pad(at.getMinutes());
    if (style !== "short") return clock;
    if (at.toDateString() === new Date().toDateString()) return clock + ":" + pad(at.getSeconds());
    return at.getFullYear() + "-" + pad(at.getMonth() + 1) + "-" + pad(at.getDate()) + " " + clock;
  }

  function localizeTimes(root) {
    (root || document).querySelectorAll("time[data-local-time]").forEach(function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      var text = localText(at, el.dataset.localTime);
      if (el.textContent !== text) el.textContent = text;
      if (!el.title) el.title = at.toISOString().replace("T", " ").slice(0, 19) + " UTC";
    });
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
    (root || document).querySelectorAll("[data-time-zone-note]").forEach(function (el) {
      var text = "times in your time zone" + (zone ? " (" + zone + ")" : "") + ", UTC on hover";
      if (el.textContent !== text) el.textContent = text;
    });
  }

  function followTimes() {
    localizeTimes();
    if (!window.MutationObserver) return;
    var pending = false;
    new MutationObserver(function () {
      if (pending) return;
      pending = true;
      requestAnimationFrame(function () { pending = false; localizeTimes(); });
    }).observe(document.body, {childList: true, subtree: true, characterData: true});
  }

  // --- the batch page's log -------------------------------------------------------
  // The page shows the newest lines, scrolled to the bottom, and stays there as lines are appended
  // (unless the reader scrolled away). Reaching the "Older lines" link at the top, or clicking it,
  // prepends the page of lines before the first one shown, keeping what the reader looks at in place;
  // without scripts the link opens that page instead.

  function initLog() {
    var box = document.getElementById("log-box");
    var list = document.getElementById("log-lines");
    if (!box || !list) return;
    var pinned = true;
    box.scrollTop = box.scrollHeight;
    box.addEventListener("scroll", function () {
      pinned = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    });
    if (window.MutationObserver) {
      new MutationObserver(function () { if (pinned) box.scrollTop = box.scrollHeight; })
        .observe(list, {childList: true});
    }
    var older = document.getElementById("log-older");
    if (!older) return;
    var loading = false, observer = null;

    function loadOlder(event) {
      if (event) event.preventDefault();
      var first = list.querySelector("li[data-log-id]");
      if (loading || !older.isConnected || !first) return;
      loading = true;
      var url = older.dataset.olderSrc;
      url += (url.indexOf("?") < 0 ? "?" : "&") + "before=" + first.dataset.logId;
      fetch(url, {credentials: "same-origin"}).then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        var more = response.headers.get("X-Log-Older") === "1";
        return response.text().then(function (html) {
          var height = box.scrollHeight, top = box.scrollTop;
          pinned = false;
          list.insertAdjacentHTML("afterbegin", html);
          box.scrollTop = top + box.scrollHeight - height;
          if (!more) {
            older.remove();
            if (observer) observer.disconnect();
          }
        });
      }).catch(function () { /* left for the next scroll or click */ }).then(function () { loading = false; });
    }

    older.addEventListener("click", loadOlder);
    if (window.IntersectionObserver) {
      observer = new IntersectionObserver(function (entries) {
        if (entries.some(function (entry) { return entry.isIntersecting; })) loadOlder();
      }, {root: box});
      observer.observe(older);
    }
  }

  initProfilePicker();
  initProcessorSelect();
  initAutosubmit();
  followTimes();
  initLog();
  if (body.dataset.liveUrl) connect();
})();
