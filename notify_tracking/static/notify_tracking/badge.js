/* django-notify-tracking: opens and closes status badge popups, loads and refreshes them.
 *
 * No dependencies, no inline code: the markup carries data attributes only
 * (data-nt-badge, data-nt-url, data-nt-toggle, data-nt-popup, data-nt-close,
 * data-nt-refresh, data-nt-message), and one set of listeners on the document serves
 * every badge, including badges added to the page later.
 *
 * A badge of a list is its icon alone: the first time it is opened, a popup says
 * "Loading" while the full badge (icon and popup with the details) is fetched from
 * its data-nt-url, then takes its place, open. The refresh button fetches it again.
 * A failed load says so in the popup, which can be closed or retried.
 *
 * Keyboard: the icon is a <button>, so Enter and Space open it; Escape closes the
 * open popup and returns focus to its button.
 *
 * The messages come translated from data-nt-text-* attributes of this script's tag
 * ({% delivery_badge_assets %}); English when they are missing.
 */
(function () {
  "use strict";

  var script = document.currentScript || document.querySelector("script[data-nt-texts]");
  var DEFAULT_TEXTS = {
    loading: "Loading the details…",
    "load-error": "The details could not be loaded. Try again later.",
    unavailable: "You may not see these details, or they no longer exist.",
    retry: "Try again",
    close: "Close",
  };
  var popupCount = 0;

  function text(name) {
    var value = script ? script.getAttribute("data-nt-text-" + name) : null;
    return value || DEFAULT_TEXTS[name];
  }

  function badgeOf(element) {
    return element.closest("[data-nt-badge]");
  }

  function buttonOf(badge) {
    return badge.querySelector("[data-nt-toggle]");
  }

  function popupOf(badge) {
    return badge.querySelector("[data-nt-popup]");
  }

  function urlOf(badge) {
    // data-nt-refresh-url: badge templates written before data-nt-url
    return badge.getAttribute("data-nt-url") || badge.getAttribute("data-nt-refresh-url");
  }

  function isOpen(badge) {
    var popup = popupOf(badge);
    return Boolean(popup) && !popup.hidden;
  }

  function hasDetails(badge) {
    var popup = popupOf(badge);
    return Boolean(popup) && !popup.hasAttribute("data-nt-shell");
  }

  function element(tag, className, content) {
    var node = document.createElement(tag);
    node.className = className;
    if (content) {
      node.textContent = content;
    }
    return node;
  }

  /* The popup of an icon-only badge until its details arrive: title, close, message. */
  function shellOf(badge) {
    var popup = popupOf(badge);
    if (popup) {
      return popup;
    }
    var button = buttonOf(badge);
    var id = "nt-popup-loading-" + ++popupCount;
    popup = element("div", "nt-popup");
    popup.id = id;
    popup.hidden = true;
    popup.tabIndex = -1;
    popup.setAttribute("role", "dialog");
    popup.setAttribute("aria-labelledby", id + "-title");
    popup.setAttribute("data-nt-popup", "");
    popup.setAttribute("data-nt-shell", "");

    var header = element("div", "nt-popup__header");
    var title = element("h2", "nt-popup__title", button.getAttribute("title"));
    title.id = id + "-title";
    var actions = element("div", "nt-popup__actions");
    var closeButton = element("button", "nt-popup__close", "\u00d7");
    closeButton.type = "button";
    closeButton.setAttribute("aria-label", text("close"));
    closeButton.setAttribute("data-nt-close", "");
    actions.appendChild(closeButton);
    header.appendChild(title);
    header.appendChild(actions);
    popup.appendChild(header);

    var message = element("p", "nt-popup__message");
    message.setAttribute("role", "status");
    message.setAttribute("data-nt-message", "");
    popup.appendChild(message);

    badge.appendChild(popup);
    button.setAttribute("aria-controls", id);
    return popup;
  }

  function say(badge, message, isError) {
    var area = badge.querySelector("[data-nt-message]");
    if (area) {
      area.textContent = message;
      area.classList.toggle("nt-popup__message--error", isError);
    }
  }

  function open(badge) {
    document.querySelectorAll("[data-nt-badge]").forEach(function (other) {
      if (other !== badge && isOpen(other)) {
        close(other, false);
      }
    });
    if (!hasDetails(badge)) {
      shellOf(badge);
      load(badge);
    }
    var popup = popupOf(badge);
    popup.hidden = false;
    buttonOf(badge).setAttribute("aria-expanded", "true");
    popup.focus();
  }

  function close(badge, returnFocus) {
    var popup = popupOf(badge);
    var button = buttonOf(badge);
    if (popup) {
      popup.hidden = true;
    }
    button.setAttribute("aria-expanded", "false");
    if (returnFocus) {
      button.focus();
    }
  }

  function openBadge() {
    var popup = document.querySelector("[data-nt-popup]:not([hidden])");
    return popup ? badgeOf(popup) : null;
  }

  function LoadError(status) {
    this.status = status;
  }

  /* Fetch the full badge and put it in place of ``badge``; open it if ``badge`` was. */
  function load(badge) {
    if (badge.hasAttribute("data-nt-loading")) {
      return;
    }
    var url = urlOf(badge);
    var popup = popupOf(badge);
    badge.setAttribute("data-nt-loading", "");
    popup.setAttribute("aria-busy", "true");
    badge.querySelectorAll("[data-nt-refresh]").forEach(function (button) {
      button.disabled = true;
    });
    say(badge, text("loading"), false);
    var request = url
      ? fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      : Promise.reject(new LoadError(404));
    request
      .then(function (response) {
        if (!response.ok) {
          throw new LoadError(response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var holder = document.createElement("template");
        holder.innerHTML = html.trim();
        var fresh = holder.content.querySelector("[data-nt-badge]");
        if (!fresh) {
          // Nothing for this user: no longer allowed, or no longer notified.
          throw new LoadError(404);
        }
        var wasOpen = isOpen(badge);
        var hadFocus = badge.contains(document.activeElement);
        badge.replaceWith(fresh);
        if (wasOpen) {
          open(fresh);
        } else if (hadFocus) {
          buttonOf(fresh).focus();
        }
      })
      .catch(function (error) {
        failed(badge, error instanceof LoadError ? error.status : 0);
      });
  }

  function failed(badge, status) {
    var popup = popupOf(badge);
    badge.removeAttribute("data-nt-loading");
    popup.removeAttribute("aria-busy");
    badge.querySelectorAll("[data-nt-refresh]").forEach(function (button) {
      button.disabled = false;
    });
    var refused = status === 401 || status === 403 || status === 404;
    if (refused) {
      say(badge, text("unavailable"), true);
      return;
    }
    say(badge, badge.getAttribute("data-nt-refresh-error") || text("load-error"), true);
    if (!popup.querySelector("[data-nt-refresh]")) {
      var retry = element("button", "nt-popup__refresh", text("retry"));
      retry.type = "button";
      retry.setAttribute("data-nt-refresh", "");
      popup.querySelector(".nt-popup__actions").prepend(retry);
    }
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
      load(badge);
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
