/* batchq: the batch table's filter form, and reordering queued rows by drag and drop, with the
 * mouse or the keyboard.
 *
 * The filter form leaves its empty fields out of the URL, so a link to a filtered table says only
 * what it filters on.
 *
 * Every drop is one "to position" form submission (the row's own form, so htmx posts it with its
 * CSRF token and swaps the table in): one call to the queue manager, which keeps the queue's rules
 * under its lock. A drop on another queued row asks for that row's position.
 *
 * Keyboard: focus a row's handle (⠿), Space or Enter picks the batch up, ArrowUp/ArrowDown move it
 * among the queued rows, Space or Enter drops it there, Escape (or leaving the handle) cancels.
 * Each step is announced in #drag-announce.
 *
 * While a drag is under way body[data-dragging] is set: app.js then holds the table's live
 * refreshes, so no swap replaces the rows under the pointer; "batchq:drag-end" releases them.
 */
(function () {
  "use strict";

  var filters = document.getElementById("batch-filters");
  if (filters) {
    filters.addEventListener("submit", function () {
      Array.prototype.forEach.call(filters.elements, function (el) {
        if (el.name && el.type !== "checkbox" && el.value === "") el.disabled = true;
      });
      // Back to the page from history: the fields must be usable again.
      setTimeout(function () {
        Array.prototype.forEach.call(filters.elements, function (el) { el.disabled = false; });
      }, 0);
    });
  }

  var body = document.body;
  var region = document.getElementById("table-region");
  if (!region) return;
  body.classList.add("dnd-ready");   // shows the handles: they are useless without this script

  var lifted = null;   // keyboard: {row, handle, positions, start}
  var dragged = null;  // mouse: the row

  function announce(text) {
    var el = document.getElementById("drag-announce");
    if (el) el.textContent = text;
  }

  function queuedRows() {
    return Array.prototype.slice.call(region.querySelectorAll("#batch-table tr[data-position]"));
  }

  function positionOf(row) { return Number(row.dataset.position); }

  function queuedCount(row) {
    var input = row.querySelector("input[name=position]");
    return input ? input.max : "";
  }

  function begin(mode) { body.dataset.dragging = mode; }

  function end() {
    delete body.dataset.dragging;
    region.querySelectorAll(".dragging, .drop-target, .lifted").forEach(function (el) {
      el.classList.remove("dragging", "drop-target", "lifted");
    });
    document.dispatchEvent(new CustomEvent("batchq:drag-end"));
  }

  function submitMove(row, position) {
    var form = row.querySelector("form[data-move-form]");
    if (!form) return;
    form.elements.position.value = String(position);
    form.requestSubmit();
  }

  // --- the mouse: HTML5 drag and drop --------------------------------------------

  region.addEventListener("dragstart", function (event) {
    var handle = event.target.closest && event.target.closest("[data-drag-handle]");
    if (!handle || lifted) return;
    dragged = handle.closest("tr[data-position]");
    if (!dragged) return;
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", dragged.dataset.batchId);
    if (event.dataTransfer.setDragImage) event.dataTransfer.setDragImage(dragged, 12, 12);
    dragged.classList.add("dragging");
    begin("mouse");
    announce("Batch " + dragged.dataset.batchId + " picked up.");
  });

  function dropRow(event) {
    var row = event.target.closest && event.target.closest("tr[data-position]");
    return dragged && row && row !== dragged ? row : null;
  }

  region.addEventListener("dragover", function (event) {
    var row = dropRow(event);
    if (!row) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "move";
    region.querySelectorAll(".drop-target").forEach(function (el) { if (el !== row) el.classList.remove("drop-target"); });
    row.classList.add("drop-target");
  });

  region.addEventListener("drop", function (event) {
    var row = dropRow(event);
    if (!row) return;
    event.preventDefault();
    var moving = dragged;
    dragged = null;
    end();
    announce("Batch " + moving.dataset.batchId + " dropped at #" + positionOf(row) + ".");
    submitMove(moving, positionOf(row));
  });

  region.addEventListener("dragend", function () {
    if (!dragged) return;   // dropped: already ended
    dragged = null;
    end();
    announce("Move cancelled.");
  });

  // --- the keyboard ----------------------------------------------------------------

  function describe() {
    var index = queuedRows().indexOf(lifted.row);
    return "Batch " + lifted.row.dataset.batchId + ": #" + lifted.positions[index] + " of " + queuedCount(lifted.row) + ".";
  }

  function lift(handle) {
    var row = handle.closest("tr[data-position]");
    if (!row) return;
    var rows = queuedRows();
    // The queued rows are consecutive: a cancel puts them back, in order, before what followed them.
    var after = rows[rows.length - 1].nextElementSibling;
    lifted = {row: row, handle: handle, positions: rows.map(positionOf), start: rows.indexOf(row), order: rows, after: after};
    row.classList.add("lifted");
    handle.setAttribute("aria-pressed", "true");
    begin("keyboard");
    announce("Picked up. " + describe() + " Arrow keys move it, Space drops it, Escape cancels.");
  }

  function step(delta) {
    var rows = queuedRows();
    var index = rows.indexOf(lifted.row);
    var other = rows[index + delta];
    if (!other) { announce(describe()); return; }
    other.parentNode.insertBefore(lifted.row, delta < 0 ? other : other.nextSibling);
    lifted.handle.focus();
    announce(describe());
  }

  function put(cancelled) {
    var done = lifted;
    lifted = null;
    done.handle.removeAttribute("aria-pressed");
    var index = queuedRows().indexOf(done.row);
    if (cancelled || index === done.start) {
      // Back where it was: the rows were only moved on this page.
      done.order.forEach(function (row) { row.parentNode.insertBefore(row, done.after); });
      end();
      done.handle.focus();
      announce(cancelled ? "Move cancelled." : "Dropped where it was.");
      return;
    }
    var position = done.positions[index];
    end();
    announce("Batch " + done.row.dataset.batchId + " dropped at #" + position + ".");
    submitMove(done.row, position);
  }

  region.addEventListener("keydown", function (event) {
    var handle = event.target.closest && event.target.closest("[data-drag-handle]");
    if (!handle) return;
    var key = event.key;
    if (!lifted) {
      if (key === " " || key === "Enter") { event.preventDefault(); lift(handle); }
      return;
    }
    if (lifted.handle !== handle) return;
    if (key === "ArrowUp" || key === "ArrowDown") { event.preventDefault(); step(key === "ArrowUp" ? -1 : 1); }
    else if (key === " " || key === "Enter") { event.preventDefault(); put(false); }
    else if (key === "Escape") { event.preventDefault(); put(true); }
  });

  // Leaving the handle (Tab, a click elsewhere) cancels; moving its row blurs it for a moment, which doesn't.
  region.addEventListener("focusout", function (event) {
    if (!lifted || event.target !== lifted.handle) return;
    setTimeout(function () {
      if (lifted && document.activeElement !== lifted.handle) put(true);
    }, 0);
  });
})();
