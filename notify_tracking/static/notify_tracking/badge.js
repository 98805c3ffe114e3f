/* django-notify-tracking: opens and closes status badge popups, and refreshes them.
 *
 * No dependencies, no inline code: the markup carries data attributes only
 * (data-nt-badge, data-nt-toggle, data-nt-popup, data-nt-close, data-nt-refresh),
 * and one set of listeners on the document serves every badge, including badges
 * added to the page later.
 *
 * Keyboard: the icon is a <button>, so Enter and Space open it; Escape closes the
 * open popup and returns focus to its button.
 */
(function () {
  "use strict";

  function badgeOf(element) {
    return element.closest("[data-nt-badge]");
  }

  function partsOf(badge) {
    return {
      button: badge.querySelector("[data-nt-toggle]"),
      popup: badge.querySelector("[data-nt-popup]"),
    };
  }

  function isOpen(badge) {
    return !partsOf(badge).popup.hidden;
  }

  function open(badge) {
    document.querySelectorAll("[data-nt-badge]").forEach(function (other) {
      if (other !== badge && isOpen(other)) {
        close(other, false);
      }
    });
    var parts = partsOf(badge);
    parts.popup.hidden = false;
    parts.button.setAttribute("aria-expanded", "true");
    parts.popup.focus();
  }

  function close(badge, returnFocus) {
    var parts = partsOf(badge);
    parts.popup.hidden = true;
    parts.button.setAttribute("aria-expanded", "false");
    if (returnFocus) {
      parts.button.focus();
    }
  }

  function openBadge() {
    var popup = document.querySelector("[data-nt-popup]:not([hidden])");
    return popup ? badgeOf(popup) : null;
  }

  function replaceBadge(badge, html) {
    var holder = document.createElement("template");
    holder.innerHTML = html.trim();
    var fresh = holder.content.querySelector("[data-nt-badge]");
    if (!fresh) {
      // The target is no longer visible to this user, or was never notified.
      badge.remove();
      return null;
    }
    badge.replaceWith(fresh);
    return fresh;
  }

  function refresh(badge) {
    var url = badge.getAttribute("data-nt-refresh-url");
    var message = badge.querySelector("[data-nt-message]");
    var button = badge.querySelector("[data-nt-refresh]");
    if (button) {
      button.disabled = true;
    }
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var fresh = replaceBadge(badge, html);
        if (fresh) {
          open(fresh);
        }
      })
      .catch(function () {
        if (button) {
          button.disabled = false;
        }
        if (message) {
          message.textContent = badge.getAttribute("data-nt-refresh-error");
        }
      });
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    var badge = badgeOf(target);
    if (target.closest("[data-nt-toggle]")) {
      if (isOpen(badge)) {
        close(badge, true);
      } else {
        open(badge);
      }
    } else if (target.closest("[data-nt-close]")) {
      close(badge, true);
    } else if (target.closest("[data-nt-refresh]")) {
      refresh(badge);
    } else {
      // A click outside the open popup closes it.
      var current = openBadge();
      if (current && !current.contains(target)) {
        close(current, false);
      }
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" && event.key !== "Esc") {
      return;
    }
    var current = openBadge();
    if (current) {
      event.preventDefault();
      close(current, true);
    }
  });
})();
