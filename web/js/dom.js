// Small DOM helpers shared by the screens.

// el("button", {type: "button", onclick: fn}, "Text"): attributes, listeners (on*) and children in one call.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== false && value != null) node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c != null && c !== false));
  return node;
}

const statusLine = () => document.getElementById("status");

let kept = false;

// The status line is a polite live region: screen readers read what is said there. `keep`: the words stay
// through the next change of screen (said just before navigating).
export function say(text, keep = false) {
  statusLine().textContent = text;
  kept = keep;
}

// A new screen clears the status line, except words said to be kept.
export function newScreen() {
  if (!kept) statusLine().textContent = "";
  kept = false;
}

// A labelled form field: returns [label, control] so forms read as a list of pairs.
export function field(id, labelText, control) {
  control.id = id;
  return [el("label", { for: id }, labelText), control];
}

// Runs an async action and reports its error in the status line instead of dropping it.
export async function attempt(action) {
  try {
    return await action();
  } catch (err) {
    say(err.message);
    return undefined;
  }
}

// A destructive action asked twice: the first press changes the button's text to `ask`, the second acts.
export function pressTwice(ask, action) {
  return (e) => {
    if (e.currentTarget.dataset.armed !== "1") {
      e.currentTarget.dataset.armed = "1";
      e.currentTarget.textContent = ask;
      return;
    }
    action();
  };
}
