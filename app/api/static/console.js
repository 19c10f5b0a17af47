// The live parts of a console page (elements with data-live) are fetched again whenever the event
// stream tells of a change, and swapped in place; never the part that holds the focus (it waits
// until the focus leaves), and ticked boxes stay ticked. A hidden tab closes its stream and catches
// up when it is shown again.
(function () {
  "use strict";
  if (!document.querySelector("[data-live]") || !window.EventSource || !window.fetch) {
    return;
  }
  var source = null;
  var timer = null;
  var inFlight = false;
  var again = false;
  var held = false;

  function focusedIn(region) {
    var active = document.activeElement;
    return active && active !== document.body && region.contains(active);
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    held = false;
    document.querySelectorAll("[data-live]").forEach(function (region) {
      var next = fresh.querySelector('[data-live="' + region.getAttribute("data-live") + '"]');
      if (!next) {
        return;
      }
      if (focusedIn(region)) {
        held = true;
        return;
      }
      var ticked = {};
      region.querySelectorAll("input[type=checkbox]:checked").forEach(function (box) {
        ticked[box.name + "=" + box.value] = true;
      });
      region.replaceChildren.apply(region, Array.prototype.slice.call(document.importNode(next, true).childNodes));
      region.querySelectorAll("input[type=checkbox]").forEach(function (box) {
        if (ticked[box.name + "=" + box.value]) {
          box.checked = true;
        }
      });
    });
  }

  function refresh() {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    // Marked as a refresh: only the live parts are taken, so the server need not find where the
    // event stream of a new page would start.
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html", "X-Live-Refresh": "1" } })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html) {
          swap(html);
        }
      })
      .catch(function () {})
      .then(function () {
        inFlight = false;
        if (again) {
          again = false;
          later();
        }
      });
  }

  // At most one refresh every 250 ms, and always one after a burst: a busy system that tells of
  // changes without a pause keeps the page live rather than putting its refresh off forever.
  function later() {
    if (timer === null) {
      timer = setTimeout(function () {
        timer = null;
        refresh();
      }, 250);
    }
  }

  function listen() {
    if (source === null) {
      // From where the page was rendered: nothing that happened since is missed.
      var after = document.body.getAttribute("data-events-after");
      source = new EventSource("/api/events" + (after ? "?last_event_id=" + encodeURIComponent(after) : ""));
      source.onmessage = later;
      source.addEventListener("reset", later);
    }
  }

  function stop() {
    if (source !== null) {
      source.close();
      source = null;
    }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      stop();
    } else {
      document.body.removeAttribute("data-events-after"); // caught up by the refresh below
      listen();
      later();
    }
  });
  document.addEventListener("focusout", function () {
    if (held) {
      later();
    }
  });
  if (!document.hidden) {
    listen();
  }
})();
