// The permission-management UI: plain DOM, no framework, no build step. Every check is
// the API's; the page only shows what the API answers. Text always goes in as text
// nodes (never innerHTML), so names from the API cannot inject markup.
'use strict';

const P = '/api/2.0/mlflow';
const PAGE_SIZE = 50;
const LEVELS = ['READ', 'USE', 'EDIT', 'MANAGE', 'NO_PERMISSIONS'];
const LEVEL_LABELS = { NO_PERMISSIONS: 'NO_PERMISSIONS (deny)' };

// What the experiments, models and prompts pages have in common.
const KINDS = {
  experiments: {
    title: 'Experiments', one: 'experiment', api: 'experiments',
    patterns: 'experiment-patterns', key: (it) => String(it.id),
  },
  models: {
    title: 'Registered models', one: 'registered model', api: 'registered-models',
    patterns: 'registered-models-patterns', key: (it) => it.name,
  },
  prompts: {
    title: 'Prompts', one: 'prompt', api: 'prompts',
    patterns: 'prompts-patterns', key: (it) => it.name,
  },
};

let config = { authenticated: false, username: null, is_admin: false, mlflow_url: '/' };

// ---- small helpers ------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'testid') el.dataset.testid = v;
    else if (k === 'value') el.value = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of [children].flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

function enc(s) {
  return encodeURIComponent(s);
}

function when(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  return new Date(seconds * 1000).toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}

function levelSelect(attrs, current) {
  return h('select', attrs, LEVELS.map((l) =>
    h('option', { value: l, selected: l === current }, LEVEL_LABELS[l] || l)));
}

function errorBox(id) {
  return h('p', { class: 'error', role: 'alert', id, testid: id });
}

function statusBox(id) {
  return h('p', { class: 'status', role: 'status', id, testid: id });
}

function showError(box, err) {
  clear(box);
  box.append(err && err.message ? err.message : String(err));
  if (err && err.status === 401) {
    box.append(' ', h('a', { href: loginHref() }, 'Sign in again'));
  }
}

function loginHref() {
  return '/oidc/login?next=' + enc('/oidc/ui/' + location.hash);
}

function table(columns, testid) {
  const tbody = h('tbody');
  const el = h('table', { testid },
    h('thead', {}, h('tr', {}, columns.map((c) =>
      h('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)))),
    tbody);
  return { el, tbody };
}

function emptyRow(tbody, colspan, text) {
  tbody.append(h('tr', { class: 'empty' }, h('td', { colspan, class: 'muted' }, text)));
}

// ---- the API ------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path.startsWith('/') ? path : P + '/' + path, opts);
  } catch (e) {
    throw new ApiError(0, 'NETWORK', 'The server could not be reached: ' + e.message);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = null; }
  }
  if (!res.ok) {
    let message = data && typeof data.message === 'string' && data.message
      ? data.message : `${res.status} ${res.statusText || 'error'}`;
    if (res.status === 401) message = 'Your session has ended. ' + message;
    throw new ApiError(res.status, data && data.error_code, message);
  }
  const total = res.headers.get('X-Total-Count');
  return { data, total: total === null ? null : Number(total) };
}

const get = (path) => api('GET', path).then((r) => r.data);

// A page of a [paged] collection: {rows, total} (total null when the server omits it).
async function page(path, { search, offset, limit }, pick) {
  const q = new URLSearchParams({ limit: String(limit || PAGE_SIZE), offset: String(offset || 0) });
  if (search) q.set('search', search);
  const r = await api('GET', `${path}?${q}`);
  const rows = pick ? pick(r.data) : r.data;
  return { rows: Array.isArray(rows) ? rows : [], total: r.total };
}

// ---- building blocks ----------------------------------------------------------------

// An in-place "Do X? Confirm / Cancel" in `holder`, instead of a blocking dialog.
function confirmInPlace(holder, question, confirmLabel, onConfirm) {
  const saved = Array.from(holder.childNodes);
  const restore = () => {
    clear(holder);
    append(holder, saved);
    const again = holder.querySelector('button');
    if (again) again.focus();
  };
  const yes = h('button', { type: 'button', class: 'danger solid', testid: 'confirm' }, confirmLabel);
  const no = h('button', { type: 'button', testid: 'cancel' }, 'Cancel');
  const box = h('span', { class: 'confirm', role: 'group', 'aria-label': question },
    h('span', {}, question), yes, no);
  yes.addEventListener('click', async () => {
    yes.disabled = true;
    no.disabled = true;
    // onConfirm shows its own errors and redraws what changed.
    await onConfirm();
  });
  no.addEventListener('click', restore);
  box.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') restore(); });
  clear(holder).append(box);
  no.focus();
}

// A searchable, paged list. `load({search, offset, limit})` -> {rows, total};
// `row(item)` -> <tr>. Paging state lives in the hash query, so Back restores it.
function pagedList({ id, label, columns, load, row, emptyText }) {
  const params = routeQuery();
  const state = { search: params.get('search') || '', offset: Number(params.get('offset')) || 0 };
  const input = h('input', {
    type: 'search', id: `${id}-search`, name: 'search', value: state.search,
    autocomplete: 'off', testid: `${id}-search`,
  });
  const form = h('form', { class: 'inline', role: 'search', id: `${id}-search-form` },
    h('label', { for: `${id}-search` }, `Search ${label}`, input),
    h('button', { type: 'submit', id: `${id}-search-button` }, 'Search'));
  const err = errorBox(`${id}-error`);
  const { el, tbody } = table(columns, `${id}-table`);
  const range = h('span', { id: `${id}-range`, testid: `${id}-range`, 'aria-live': 'polite' });
  const prev = h('button', { type: 'button', id: `${id}-prev`, testid: `${id}-prev` }, '‹ Previous');
  const next = h('button', { type: 'button', id: `${id}-next`, testid: `${id}-next` }, 'Next ›');
  const pager = h('div', { class: 'pager' }, prev, next, range);

  async function refresh(focusAfter) {
    clear(err);
    prev.disabled = true;
    next.disabled = true;
    el.setAttribute('aria-busy', 'true');
    let result;
    try {
      result = await load({ search: state.search, offset: state.offset, limit: PAGE_SIZE });
    } catch (e) {
      el.removeAttribute('aria-busy');
      clear(tbody);
      clear(range);
      showError(err, e);
      return;
    }
    const { rows, total } = result;
    clear(tbody);
    rows.forEach((it) => tbody.append(row(it)));
    if (!rows.length) emptyRow(tbody, columns.length, state.search ? `No ${label} match “${state.search}”.` : emptyText);
    const first = rows.length ? state.offset + 1 : 0;
    const last = state.offset + rows.length;
    clear(range).append(total === null
      ? (rows.length ? `${first}–${last}` : '')
      : `${first}–${last} of ${total}`);
    prev.disabled = state.offset <= 0;
    next.disabled = total === null ? rows.length < PAGE_SIZE : last >= total;
    el.removeAttribute('aria-busy');
    el.dataset.loaded = 'true';
    // A pager button that just became disabled would drop the focus: keep it nearby.
    if (focusAfter && focusAfter.disabled) {
      range.setAttribute('tabindex', '-1');
      range.focus();
    }
  }

  function remember() {
    const q = new URLSearchParams();
    if (state.search) q.set('search', state.search);
    if (state.offset) q.set('offset', String(state.offset));
    const path = location.hash.split('?')[0] || '#/';
    history.replaceState(null, '', q.toString() ? `${path}?${q}` : path);
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.search = input.value.trim();
    state.offset = 0;
    remember();
    refresh();
  });
  prev.addEventListener('click', () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    remember();
    refresh(prev);
  });
  next.addEventListener('click', () => {
    state.offset += PAGE_SIZE;
    remember();
    refresh(next);
  });
  refresh();
  return h('div', { class: 'paged', id }, form, err, el, pager);
}

function resourceLink(kind, item) {
  const key = KINDS[kind].key(item);
  return h('a', { href: `#/${kind}/${enc(key)}`, testid: `${kind}-link`, 'data-key': key },
    item.name || key);
}

// Effective permissions (a user) or direct grants (a group) on the three kinds.
function permissionTables(owner, heading, intro) {
  const wrap = h('section', { 'aria-labelledby': 'perm-heading', id: 'permissions' },
    h('h2', { id: 'perm-heading' }, heading),
    intro ? h('p', { class: 'muted' }, intro) : null);
  for (const kind of Object.keys(KINDS)) {
    const k = KINDS[kind];
    const cols = [{ label: 'Name' }, ...(kind === 'experiments' ? [{ label: 'ID' }] : []),
      { label: 'Permission' }, { label: 'Source' }];
    const { el, tbody } = table(cols, `perm-${kind}`);
    const err = errorBox(`perm-${kind}-error`);
    wrap.append(h('h3', {}, k.title), err, el);
    get(`${P}/permissions/${owner}/${k.api}`).then((rows) => {
      rows = Array.isArray(rows) ? rows : [];
      rows.forEach((it) => tbody.append(h('tr', { testid: 'perm-row', 'data-key': k.key(it) },
        h('td', {}, resourceLink(kind, it)),
        kind === 'experiments' ? h('td', { class: 'mono' }, it.id) : null,
        h('td', {}, h('code', {}, it.permission)),
        h('td', {}, it.kind || '—'))));
      if (!rows.length) emptyRow(tbody, cols.length, `No grants on ${k.title.toLowerCase()}.`);
      el.dataset.loaded = 'true';
    }).catch((e) => showError(err, e));
  }
  return wrap;
}

// Pattern (regex) rules of `owner` ("users/<u>" or "groups/<g>"): list, add, delete.
function patternRules(owner) {
  const wrap = h('section', { 'aria-labelledby': 'rules-heading', id: 'pattern-rules' },
    h('h2', { id: 'rules-heading' }, 'Pattern rules'),
    h('p', { class: 'muted' },
      'A rule grants a permission on every resource whose name matches the regular expression ',
      '(matched from the start of the name). Among matching rules the lowest priority number wins.'));
  for (const kind of Object.keys(KINDS)) {
    const k = KINDS[kind];
    const base = `${P}/permissions/${owner}/${k.patterns}`;
    const id = `rules-${kind}`;
    const { el, tbody } = table([{ label: 'Regex' }, { label: 'Priority', num: true },
      { label: 'Permission' }, { label: 'Actions' }], `${id}-table`);
    const err = errorBox(`${id}-error`);
    const status = statusBox(`${id}-status`);
    const regex = h('input', { type: 'text', id: `${id}-regex`, required: true, autocomplete: 'off', spellcheck: 'false' });
    const priority = h('input', { type: 'number', id: `${id}-priority`, value: '100', required: true, step: '1' });
    const level = levelSelect({ id: `${id}-permission` }, 'READ');
    const form = h('form', { class: 'inline', id: `${id}-form` },
      h('label', { for: regex.id }, 'Regex', regex),
      h('label', { for: priority.id }, 'Priority', priority),
      h('label', { for: level.id }, 'Permission', level),
      h('button', { type: 'submit', class: 'primary' }, `Add ${k.one} rule`));

    async function refresh() {
      let rows;
      try {
        rows = await get(base);
      } catch (e) {
        showError(err, e);
        return;
      }
      rows = Array.isArray(rows) ? rows : [];
      clear(tbody);
      rows.forEach((r) => {
        const actions = h('td', { class: 'row-actions' });
        const del = h('button', { type: 'button', class: 'danger', testid: 'delete-rule', 'aria-label': `Delete rule ${r.regex}` }, 'Delete');
        actions.append(del);
        del.addEventListener('click', () => confirmInPlace(actions, `Delete rule ${r.regex}?`, 'Delete', async () => {
          clear(err);
          try {
            await api('DELETE', `${base}/${enc(r.id)}`);
            clear(status).append(`Deleted rule ${r.regex}.`);
          } catch (e) {
            showError(err, e);
          }
          refresh();
        }));
        tbody.append(h('tr', { testid: 'rule-row', 'data-regex': r.regex },
          h('td', {}, h('code', {}, r.regex)),
          h('td', { class: 'num' }, r.priority),
          h('td', {}, h('code', {}, r.permission)),
          actions));
      });
      if (!rows.length) emptyRow(tbody, 4, `No ${k.one} rules.`);
      el.dataset.loaded = 'true';
    }

    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clear(err);
      clear(status);
      const body = { regex: regex.value, priority: Number(priority.value), permission: level.value };
      if (!Number.isInteger(body.priority)) {
        showError(err, 'Priority must be a whole number.');
        return;
      }
      try {
        await api('POST', base, body);
        clear(status).append(`Added rule ${body.regex} (${body.permission}).`);
        regex.value = '';
      } catch (e) {
        showError(err, e);
      }
      refresh();
    });
    wrap.append(h('h3', {}, k.title), err, status, el, form);
    refresh();
  }
  return wrap;
}

// ---- pages ----------------------------------------------------------------------------

function heading(text, crumbs) {
  document.title = `${text} · MLflow permissions`;
  const h1 = h('h1', { tabindex: '-1', id: 'page-title' }, text);
  return [crumbs ? h('p', { class: 'crumbs' }, crumbs) : null, h1];
}

function adminOnly(main, what) {
  append(main, heading(what));
  main.append(h('p', { class: 'error', role: 'alert', id: 'admin-only' },
    `Only admins can manage ${what.toLowerCase()}.`));
}

function resourceList(main, kind) {
  const k = KINDS[kind];
  append(main, heading(k.title));
  main.append(h('p', { class: 'muted' }, config.is_admin
    ? `Every ${k.one}. Open one to see and change who has access.`
    : `The ${k.title.toLowerCase()} you manage. Open one to see and change who has access.`));
  const columns = [{ label: 'Name' }, ...(kind === 'experiments' ? [{ label: 'ID' }] : [])];
  main.append(pagedList({
    id: `${kind}-list`, label: k.title.toLowerCase(), columns,
    emptyText: config.is_admin ? `No ${k.title.toLowerCase()}.` : `No ${k.title.toLowerCase()} you manage.`,
    load: (q) => page(`${P}/permissions/${k.api}`, q),
    row: (it) => h('tr', { testid: 'list-row', 'data-key': k.key(it) },
      h('td', {}, resourceLink(kind, it)),
      kind === 'experiments' ? h('td', { class: 'mono' }, it.id) : null),
  }));
}

// Who has access to one experiment / model / prompt, with grant, change and revoke.
function resourcePage(main, kind, key) {
  const k = KINDS[kind];
  const base = `${P}/permissions`;
  const title = h('span', { id: 'resource-name' }, key);
  const titleBits = heading('', h('a', { href: `#/${kind}` }, `‹ ${k.title}`));
  titleBits[1].append(`${k.one[0].toUpperCase()}${k.one.slice(1)}: `, title);
  document.title = `${k.one} ${key} · MLflow permissions`;
  append(main, titleBits);
  if (kind === 'experiments') {
    // The name, from MLflow itself (a manager may read the experiment).
    get(`${P}/experiments/get?experiment_id=${enc(key)}`).then((d) => {
      const name = d && d.experiment && d.experiment.name;
      if (name) clear(title).append(name, h('span', { class: 'muted mono' }, ` (id ${key})`));
    }).catch(() => {});
  }

  const err = errorBox('access-error');
  const status = statusBox('access-status');
  const { el, tbody } = table([{ label: 'Who' }, { label: 'Type' }, { label: 'Permission' },
    { label: 'Actions' }], 'access-table');
  main.append(h('h2', {}, 'Who has access'), err, status, el);

  const principalPath = (who, name) =>
    `${base}/${who === 'group' ? 'groups' : 'users'}/${enc(name)}/${k.api}/${enc(key)}`;

  async function refresh() {
    let users, groups;
    try {
      [users, groups] = await Promise.all([
        get(`${base}/${k.api}/${enc(key)}/users`),
        get(`${base}/${k.api}/${enc(key)}/groups`),
      ]);
    } catch (e) {
      showError(err, e);
      el.dataset.loaded = 'error';
      return;
    }
    const rows = [...(users || []).map((u) => ({ ...u, kind: 'user' })),
      ...(groups || []).map((g) => ({ ...g, kind: 'group' }))];
    clear(tbody);
    rows.forEach((r) => tbody.append(accessRow(r)));
    if (!rows.length) emptyRow(tbody, 4, 'Nobody has a direct grant. Defaults and pattern rules still apply.');
    el.dataset.loaded = 'true';
  }

  function accessRow(r) {
    const who = r.kind === 'group' ? 'group' : 'user';
    const label = `${who} ${r.name}`;
    const select = levelSelect({ 'aria-label': `Permission of ${label}`, testid: 'permission-select' }, r.permission);
    const save = h('button', { type: 'button', testid: 'save-permission', disabled: true }, 'Save');
    select.addEventListener('change', () => { save.disabled = select.value === r.permission; });
    save.addEventListener('click', async () => {
      clear(err);
      clear(status);
      save.disabled = true;
      try {
        await api('PATCH', principalPath(who, r.name), { permission: select.value });
        r.permission = select.value;
        clear(status).append(`Changed ${label} to ${select.value}.`);
      } catch (e) {
        showError(err, e);
        save.disabled = false;
      }
    });
    const actions = h('td', { class: 'row-actions' });
    const revoke = h('button', { type: 'button', class: 'danger', testid: 'revoke', 'aria-label': `Revoke access of ${label}` }, 'Revoke');
    actions.append(revoke);
    revoke.addEventListener('click', () => confirmInPlace(actions, `Revoke access of ${label}?`, 'Revoke', async () => {
      clear(err);
      clear(status);
      try {
        await api('DELETE', principalPath(who, r.name));
        clear(status).append(`Revoked access of ${label}.`);
      } catch (e) {
        showError(err, e);
      }
      await refresh();
      document.getElementById('page-title').focus();
    }));
    const nameCell = config.is_admin
      ? h('a', { href: `#/${who === 'group' ? 'groups' : 'users'}/${enc(r.name)}` }, r.name)
      : r.name;
    return h('tr', { testid: 'access-row', 'data-name': r.name, 'data-kind': who },
      h('td', {}, nameCell), h('td', {}, who === 'group' ? 'Group' : 'User'),
      h('td', { class: 'row-actions' }, select, save), actions);
  }

  // The grant form.
  const whoSel = h('select', { id: 'grant-who', name: 'who' },
    h('option', { value: 'user' }, 'User'), h('option', { value: 'group' }, 'Group'));
  const nameInput = h('input', {
    type: 'text', id: 'grant-name', name: 'name', required: true, autocomplete: 'off',
    spellcheck: 'false', list: 'grant-suggestions', placeholder: 'alice@example.com',
  });
  const nameLabel = h('span', {}, 'User name');
  const suggestions = h('datalist', { id: 'grant-suggestions' });
  const level = levelSelect({ id: 'grant-permission', name: 'permission' }, 'READ');
  const formErr = errorBox('grant-error');
  const form = h('form', { class: 'inline', id: 'grant-form', 'aria-labelledby': 'grant-legend' },
    h('label', { for: 'grant-who' }, 'Grant to', whoSel),
    h('label', { for: 'grant-name' }, nameLabel, nameInput), suggestions,
    h('label', { for: 'grant-permission' }, 'Permission', level),
    h('button', { type: 'submit', class: 'primary', id: 'grant-submit' }, 'Grant'));
  main.append(h('fieldset', {}, h('legend', { id: 'grant-legend' }, `Grant access to this ${k.one}`), form, formErr));

  const suggest = {};
  async function fillSuggestions() {
    if (!config.is_admin) return; // listing users and groups is for admins
    const who = whoSel.value;
    if (!suggest[who]) {
      suggest[who] = (who === 'user'
        ? page(`${P}/users`, { limit: 500 })
        : page(`${base}/groups`, { limit: 500 }, (d) => d && d.groups)
      ).then((r) => r.rows.map(String)).catch(() => []);
    }
    const names = await suggest[who];
    if (whoSel.value !== who) return;
    clear(suggestions);
    names.forEach((n) => suggestions.append(h('option', { value: n })));
  }
  whoSel.addEventListener('change', () => {
    const group = whoSel.value === 'group';
    clear(nameLabel).append(group ? 'Group name' : 'User name');
    nameInput.placeholder = group ? 'data-science' : 'alice@example.com';
    fillSuggestions();
  });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(formErr);
    clear(status);
    const name = nameInput.value.trim();
    if (!name) {
      showError(formErr, 'Enter a name.');
      return;
    }
    const who = whoSel.value;
    try {
      await api('POST', principalPath(who, name), { permission: level.value });
      clear(status).append(`Granted ${level.value} to ${who} ${name}.`);
      nameInput.value = '';
    } catch (e) {
      showError(formErr, e.status === 409
        ? new ApiError(409, e.code, `${e.message} Change it in the table above instead.`) : e);
    }
    refresh();
  });
  fillSuggestions();
  refresh();
}

function usersPage(main) {
  if (!config.is_admin) return adminOnly(main, 'Users');
  append(main, heading('Users'));
  main.append(pagedList({
    id: 'users-list', label: 'users', columns: [{ label: 'User name' }],
    emptyText: 'No users.',
    load: (q) => page(`${P}/users`, q),
    row: (u) => h('tr', { testid: 'list-row', 'data-key': u },
      h('td', {}, h('a', { href: `#/users/${enc(u)}`, testid: 'users-link' }, u))),
  }));
  // Adding a user ahead of their first sign-in, e.g. to grant them access first.
  const username = h('input', { type: 'text', id: 'new-user-name', required: true, autocomplete: 'off', spellcheck: 'false' });
  const display = h('input', { type: 'text', id: 'new-user-display', autocomplete: 'off' });
  const admin = h('input', { type: 'checkbox', id: 'new-user-admin' });
  const err = errorBox('new-user-error');
  const status = statusBox('new-user-status');
  const form = h('form', { class: 'inline', id: 'new-user-form' },
    h('label', { for: username.id }, 'User name', username),
    h('label', { for: display.id }, 'Display name (optional)', display),
    h('label', { for: admin.id, class: 'check' }, admin, 'Admin'),
    h('button', { type: 'submit', class: 'primary' }, 'Add user'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(err);
    clear(status);
    const body = { username: username.value.trim(), is_admin: admin.checked };
    if (display.value.trim()) body.display_name = display.value.trim();
    try {
      await api('POST', `${P}/users`, body);
      clear(status).append('Added ', h('a', { href: `#/users/${enc(body.username)}` }, body.username), '.');
      username.value = '';
      display.value = '';
      admin.checked = false;
    } catch (e) {
      showError(err, e);
    }
  });
  main.append(h('fieldset', {}, h('legend', {}, 'Add a user'), form, err, status));
}

function userPage(main, username) {
  if (!config.is_admin) return adminOnly(main, 'Users');
  append(main, heading(`User: ${username}`, h('a', { href: '#/users' }, '‹ Users')));
  const facts = h('dl', { class: 'facts', id: 'user-facts' });
  const err = errorBox('user-error');
  const status = statusBox('user-status');
  const actions = h('div', { class: 'toolbar' });
  main.append(err, facts, actions, status);

  async function refresh() {
    let u;
    try {
      u = await get(`${P}/users/${enc(username)}`);
    } catch (e) {
      showError(err, e);
      return;
    }
    clear(facts);
    const groups = (u.groups || []).length
      ? u.groups.flatMap((g, i) => [i ? ', ' : '', h('a', { href: `#/groups/${enc(g)}` }, g)])
      : h('span', { class: 'muted' }, 'none');
    append(facts, [
      h('dt', {}, 'Display name'), h('dd', {}, u.display_name || '—'),
      h('dt', {}, 'Admin'), h('dd', {}, u.is_admin ? 'yes' : 'no'),
      h('dt', {}, 'Active'), h('dd', { id: 'user-active' }, u.active === false ? 'no (cannot sign in)' : 'yes'),
      h('dt', {}, 'Groups'), h('dd', {}, groups),
    ]);
    clear(actions);
    const active = u.active !== false;
    const toggle = h('button', { type: 'button', class: active ? 'danger' : '', id: 'user-toggle-active' },
      active ? 'Deactivate' : 'Activate');
    const holder = h('span', {}, toggle);
    actions.append(holder);
    const change = async () => {
      clear(err);
      try {
        await api('PATCH', `${P}/users/${enc(username)}/active`, { active: !active });
        clear(status).append(active ? `Deactivated ${username}.` : `Activated ${username}.`);
      } catch (e) {
        showError(err, e);
      }
      refresh();
    };
    toggle.addEventListener('click', () => (active
      ? confirmInPlace(holder, `Deactivate ${username}? They are signed out and their access tokens stop working.`, 'Deactivate', change)
      : change()));
  }
  refresh();
  main.append(permissionTables(`users/${enc(username)}`, 'Effective permissions',
    'What the user may do on each resource they or their groups hold a grant on, and which source decided it.'));
  main.append(patternRules(`users/${enc(username)}`));
}

function groupsPage(main) {
  if (!config.is_admin) return adminOnly(main, 'Groups');
  append(main, heading('Groups'));
  main.append(pagedList({
    id: 'groups-list', label: 'groups', columns: [{ label: 'Group' }],
    emptyText: 'No groups.',
    load: (q) => page(`${P}/permissions/groups`, q, (d) => d && d.groups),
    row: (g) => h('tr', { testid: 'list-row', 'data-key': g },
      h('td', {}, h('a', { href: `#/groups/${enc(g)}`, testid: 'groups-link' }, g))),
  }));
  const name = h('input', { type: 'text', id: 'new-group-name', required: true, autocomplete: 'off', spellcheck: 'false' });
  const err = errorBox('new-group-error');
  const status = statusBox('new-group-status');
  const form = h('form', { class: 'inline', id: 'new-group-form' },
    h('label', { for: name.id }, 'Group name', name),
    h('button', { type: 'submit', class: 'primary' }, 'Add group'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(err);
    clear(status);
    const group = name.value.trim();
    try {
      await api('POST', `${P}/permissions/groups`, { group_name: group });
      clear(status).append('Added ', h('a', { href: `#/groups/${enc(group)}` }, group), '.');
      name.value = '';
    } catch (e) {
      showError(err, e);
    }
  });
  main.append(h('fieldset', {}, h('legend', {}, 'Add a group'),
    h('p', { class: 'muted' }, 'Members come from the identity provider when they sign in.'), form, err, status));
}

function groupPage(main, group) {
  if (!config.is_admin) return adminOnly(main, 'Groups');
  append(main, heading(`Group: ${group}`, h('a', { href: '#/groups' }, '‹ Groups')));
  const err = errorBox('members-error');
  const { el, tbody } = table([{ label: 'Member' }, { label: 'Admin' }], 'members-table');
  main.append(h('h2', {}, 'Members'),
    h('p', { class: 'muted' }, 'As the identity provider said at each member’s last sign-in.'), err, el);
  get(`${P}/permissions/groups/${enc(group)}/users`).then((rows) => {
    rows = Array.isArray(rows) ? rows : [];
    rows.forEach((m) => tbody.append(h('tr', { testid: 'member-row', 'data-key': m.username },
      h('td', {}, h('a', { href: `#/users/${enc(m.username)}` }, m.username)),
      h('td', {}, m.is_admin ? 'yes' : 'no'))));
    if (!rows.length) emptyRow(tbody, 2, 'No members yet.');
    el.dataset.loaded = 'true';
  }).catch((e) => showError(err, e));
  main.append(permissionTables(`groups/${enc(group)}`, 'Direct grants',
    'Grants given to this group on single resources. Change them on each resource’s page.'));
  main.append(patternRules(`groups/${enc(group)}`));
}

function accountPage(main) {
  append(main, heading('My account'));
  const facts = h('dl', { class: 'facts', id: 'me-facts' });
  const err = errorBox('me-error');
  main.append(err, facts);
  get(`${P}/users/current`).then((me) => {
    const groups = (me.groups || []).length ? me.groups.join(', ') : 'none';
    append(facts, [
      h('dt', {}, 'User name'), h('dd', { id: 'me-username' }, me.username),
      h('dt', {}, 'Display name'), h('dd', {}, me.display_name || '—'),
      h('dt', {}, 'Admin'), h('dd', {}, me.is_admin ? 'yes' : 'no'),
      h('dt', {}, 'Groups'), h('dd', { id: 'me-groups' }, groups),
    ]);
  }).catch((e) => showError(err, e));

  main.append(tokensSection());
  if (config.username) {
    main.append(permissionTables(`users/${enc(config.username)}`, 'My permissions',
      'What you may do on each resource you or your groups hold a grant on, and which source decided it.'));
  }
}

function tokensSection() {
  const wrap = h('section', { id: 'tokens', 'aria-labelledby': 'tokens-heading' },
    h('h2', { id: 'tokens-heading' }, 'Access tokens'),
    h('p', { class: 'muted' },
      'For the MLflow client and scripts: set MLFLOW_TRACKING_USERNAME to your user name and ',
      'MLFLOW_TRACKING_PASSWORD to the token.'));
  const err = errorBox('tokens-error');
  const status = statusBox('tokens-status');
  const reveal = h('div', { id: 'new-token', 'aria-live': 'polite' });
  const { el, tbody } = table([{ label: 'Name' }, { label: 'Token starts' }, { label: 'Created' },
    { label: 'Expires' }, { label: 'Last used' }, { label: 'Actions' }], 'tokens-table');

  const name = h('input', { type: 'text', id: 'token-name', required: true, maxlength: '100', autocomplete: 'off' });
  const days = h('input', { type: 'number', id: 'token-days', min: '1', max: '366', step: '1', placeholder: '365' });
  const form = h('form', { class: 'inline', id: 'token-form' },
    h('label', { for: name.id }, 'Name', name),
    h('label', { for: days.id }, 'Expires in (days, optional)', days),
    h('button', { type: 'submit', class: 'primary', id: 'token-create' }, 'Create token'));
  const formErr = errorBox('token-error');

  async function refresh() {
    let data;
    try {
      data = await get(`${P}/users/current/tokens`);
    } catch (e) {
      showError(err, e);
      return;
    }
    const rows = (data && data.tokens) || [];
    clear(tbody);
    rows.forEach((t) => {
      const actions = h('td', { class: 'row-actions' });
      const revoke = h('button', { type: 'button', class: 'danger', testid: 'revoke-token', 'aria-label': `Revoke token ${t.name}` }, 'Revoke');
      actions.append(revoke);
      revoke.addEventListener('click', () => confirmInPlace(actions, `Revoke token ${t.name}?`, 'Revoke', async () => {
        clear(err);
        try {
          await api('DELETE', `${P}/users/current/tokens/${enc(t.id)}`);
          clear(status).append(`Revoked token ${t.name}.`);
        } catch (e) {
          showError(err, e);
        }
        refresh();
      }));
      tbody.append(h('tr', { testid: 'token-row', 'data-name': t.name },
        h('td', {}, t.name), h('td', {}, h('code', {}, `${t.token_prefix || ''}…`)),
        h('td', {}, when(t.created_at)), h('td', {}, when(t.expires_at)),
        h('td', {}, t.last_used_at ? when(t.last_used_at) : 'never'), actions));
    });
    if (!rows.length) emptyRow(tbody, 6, 'No access tokens.');
    el.dataset.loaded = 'true';
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(formErr);
    clear(status);
    clear(reveal);
    const body = { name: name.value.trim() };
    if (days.value !== '') body.expiration = Number(days.value);
    let made;
    try {
      made = (await api('POST', `${P}/users/current/tokens`, body)).data;
    } catch (e) {
      showError(formErr, e);
      return;
    }
    name.value = '';
    days.value = '';
    const field = h('input', {
      type: 'text', id: 'new-token-value', testid: 'new-token-value', readonly: true,
      value: made.token, 'aria-describedby': 'new-token-note', spellcheck: 'false',
    });
    const copy = h('button', { type: 'button', id: 'copy-token' }, 'Copy');
    const copied = h('span', { class: 'status', role: 'status' });
    copy.addEventListener('click', async () => {
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
        clear(copied).append('Copied.');
      } catch (e) {
        clear(copied).append('Selected: press Ctrl+C to copy.');
      }
    });
    field.addEventListener('focus', () => field.select());
    append(reveal, h('div', { class: 'token-box' },
      h('label', { for: field.id }, h('strong', {}, `New token “${made.name || body.name}”`)),
      field,
      h('div', { class: 'row-actions' }, copy, copied),
      h('p', { id: 'new-token-note' },
        'This token is shown only once. Copy it now and keep it somewhere safe; ',
        'if you lose it, revoke it and create another.')));
    field.focus();
    refresh();
  });

  append(wrap, [fieldsetOf('Create a token', form, formErr), reveal, err, status, el]);
  refresh();
  return wrap;
}

function fieldsetOf(legend, ...children) {
  return h('fieldset', {}, h('legend', {}, legend), children);
}

function auditPage(main) {
  if (!config.is_admin) return adminOnly(main, 'Audit log');
  append(main, heading('Audit log'));
  const show = (v) => (v === null || v === undefined ? '—'
    : typeof v === 'object' ? JSON.stringify(v) : String(v));
  main.append(pagedList({
    id: 'audit-list', label: 'the audit log',
    columns: [{ label: 'When' }, { label: 'Who' }, { label: 'Action' }, { label: 'Target' },
      { label: 'Before' }, { label: 'After' }],
    emptyText: 'Nothing recorded yet.',
    load: (q) => page(`${P}/permissions/audit`, q),
    row: (e) => h('tr', { testid: 'list-row' },
      h('td', {}, typeof e.at === 'number' ? when(e.at) : show(e.at)), h('td', {}, show(e.actor)),
      h('td', {}, show(e.action)), h('td', { class: 'mono' }, show(e.target)),
      h('td', { class: 'mono' }, show(e.before)), h('td', { class: 'mono' }, show(e.after))),
  }));
}

// ---- routing --------------------------------------------------------------------------

function routeParts() {
  const path = location.hash.replace(/^#\/?/, '').split('?')[0];
  return path.split('/').filter(Boolean).map((s) => {
    try { return decodeURIComponent(s); } catch (e) { return s; }
  });
}

function routeQuery() {
  const q = location.hash.split('?')[1];
  return new URLSearchParams(q || '');
}

function render() {
  const main = document.getElementById('main');
  clear(main);
  const [section, item] = routeParts();
  const current = section || 'experiments';
  document.querySelectorAll('#nav a').forEach((a) => {
    if (a.dataset.page === current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
  main.dataset.page = current + (item !== undefined ? '-item' : '');
  if (KINDS[current]) {
    if (item !== undefined) resourcePage(main, current, item);
    else resourceList(main, current);
  } else if (current === 'users') {
    if (item !== undefined) userPage(main, item); else usersPage(main);
  } else if (current === 'groups') {
    if (item !== undefined) groupPage(main, item); else groupsPage(main);
  } else if (current === 'account') {
    accountPage(main);
  } else if (current === 'audit') {
    auditPage(main);
  } else {
    append(main, heading('Not found'));
    main.append(h('p', {}, 'No such page. ', h('a', { href: '#/experiments' }, 'Experiments')));
  }
}

let firstRender = true;
function navigate() {
  render();
  // Move focus to the new page's heading (but not on first load, where the browser's
  // own focus handling is expected), so keyboard and screen-reader users follow.
  if (!firstRender) {
    const title = document.getElementById('page-title');
    if (title) title.focus();
  }
  firstRender = false;
}

async function start() {
  try {
    config = await get('/oidc/ui/config.json');
  } catch (e) {
    config = { authenticated: false };
  }
  if (!config.authenticated) {
    location.assign(loginHref());
    return;
  }
  document.getElementById('whoami').textContent = config.username;
  document.getElementById('admin-badge').hidden = !config.is_admin;
  document.querySelectorAll('[data-admin]').forEach((a) => { a.hidden = !config.is_admin; });
  const back = document.getElementById('back-to-mlflow');
  if (config.mlflow_url) back.setAttribute('href', config.mlflow_url);
  window.addEventListener('hashchange', navigate);
  document.body.dataset.ready = 'true';
  navigate();
}

document.addEventListener('DOMContentLoaded', start);
