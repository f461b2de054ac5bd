// wick's chat page: a client of the server's own API (/v1/models, /v2/chat/completions).
//
// Model and user text is untrusted. It reaches the page only as text: the DOM is built with
// createElement and textContent, never from HTML strings, and links are made only for
// http(s) URLs. The server's Content-Security-Policy (src/api/ui.rs) backs this up by
// refusing inline script and remote sources.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  // ---- storage: everything stays in this browser ------------------------------------
  const KEY_CONVERSATIONS = 'wick.conversations';
  const KEY_CURRENT = 'wick.current';
  const KEY_SETTINGS = 'wick.settings';
  const KEY_API_KEY = 'wick.apiKey';

  function load(key, fallback) {
    try {
      const text = localStorage.getItem(key);
      return text === null ? fallback : JSON.parse(text);
    } catch (_) {
      return fallback;
    }
  }

  function save(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch (e) {
      showBanner(`Could not save to this browser's storage: ${e.message}`);
    }
  }

  const DEFAULTS = {
    routing: 'auto', family: '', model: '', tradition: '', system: '',
    temperature: 0.7, top_p: 1, max_tokens: 512, tools: '', tool_choice: 'auto',
  };
  const settings = Object.assign({}, DEFAULTS, load(KEY_SETTINGS, {}));
  let conversations = load(KEY_CONVERSATIONS, []);
  if (!Array.isArray(conversations)) conversations = [];
  let currentId = load(KEY_CURRENT, null);
  let models = [];
  // The answer being streamed: { controller, conversation, message }.
  let running = null;

  const saveConversations = () => {
    save(KEY_CONVERSATIONS, conversations);
    save(KEY_CURRENT, currentId);
  };
  const apiKey = () => localStorage.getItem(KEY_API_KEY) || '';

  // ---- small DOM helpers ---------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function showBanner(message) {
    const banner = $('banner');
    banner.textContent = message;
    banner.hidden = !message;
  }

  // ---- Markdown, as DOM nodes ----------------------------------------------------------
  // A small subset: fenced code, headings, lists, quotes, paragraphs; inline code, bold,
  // italic and http(s) links. Every piece of text becomes a text node.

  const FENCE = /^\s*(```|~~~)\s*([\w+#.-]*)\s*$/;
  const LIST_ITEM = /^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const HEADING = /^(#{1,6})\s+(.*)$/;
  const QUOTE = /^\s*>\s?(.*)$/;

  function renderMarkdown(text) {
    const root = el('div', 'body');
    const lines = String(text).split('\n');
    let i = 0;
    let paragraph = [];
    const flush = () => {
      if (paragraph.length) {
        const p = el('p');
        paragraph.forEach((line, n) => {
          if (n) p.appendChild(el('br'));
          renderInline(line, p);
        });
        root.appendChild(p);
        paragraph = [];
      }
    };
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(FENCE);
      if (fence) {
        flush();
        const body = [];
        i += 1;
        // An unclosed fence (a stream still running) runs to the end.
        while (i < lines.length && !(lines[i].trim() === fence[1])) {
          body.push(lines[i]);
          i += 1;
        }
        i += 1;
        if (fence[2]) root.appendChild(el('div', 'code-lang', fence[2]));
        const pre = el('pre');
        pre.appendChild(el('code', null, body.join('\n')));
        root.appendChild(pre);
        continue;
      }
      const heading = line.match(HEADING);
      if (heading) {
        flush();
        const h = el(`h${Math.min(6, heading[1].length + 2)}`);
        renderInline(heading[2], h);
        root.appendChild(h);
        i += 1;
        continue;
      }
      if (LIST_ITEM.test(line)) {
        flush();
        const ordered = /\d/.test(line.match(LIST_ITEM)[1]);
        const list = el(ordered ? 'ol' : 'ul');
        while (i < lines.length && LIST_ITEM.test(lines[i])) {
          const li = el('li');
          renderInline(lines[i].match(LIST_ITEM)[2], li);
          list.appendChild(li);
          i += 1;
        }
        root.appendChild(list);
        continue;
      }
      if (QUOTE.test(line)) {
        flush();
        const quote = el('blockquote');
        const quoted = [];
        while (i < lines.length && QUOTE.test(lines[i])) {
          quoted.push(lines[i].match(QUOTE)[1]);
          i += 1;
        }
        quote.appendChild(renderMarkdown(quoted.join('\n')));
        root.appendChild(quote);
        continue;
      }
      if (line.trim() === '') flush();
      else paragraph.push(line);
      i += 1;
    }
    flush();
    return root;
  }

  // Inline code, **bold**, __bold__, *italic*, _italic_ (not inside words), [text](url).
  const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__|\*(?=[^\s*])([^*]*?[^\s*]|[^\s*])\*|(?<![\w])_(?=[^\s_])([^_]*?[^\s_]|[^\s_])_(?![\w])|\[([^\]\n]+)\]\(([^()\s]+)\)/g;

  function safeHref(url) {
    try {
      const parsed = new URL(url);
      return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  function renderInline(text, parent) {
    let last = 0;
    INLINE.lastIndex = 0;
    const matches = [...text.matchAll(INLINE)];
    for (const m of matches) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      last = m.index + m[0].length;
      if (m[2] !== undefined) {
        parent.appendChild(el('code', null, m[2]));
      } else if (m[3] !== undefined || m[4] !== undefined) {
        const strong = el('strong');
        renderInline(m[3] !== undefined ? m[3] : m[4], strong);
        parent.appendChild(strong);
      } else if (m[5] !== undefined || m[6] !== undefined) {
        const em = el('em');
        renderInline(m[5] !== undefined ? m[5] : m[6], em);
        parent.appendChild(em);
      } else {
        const href = safeHref(m[8]);
        if (href) {
          const a = el('a', null, m[7]);
          a.href = href;
          a.rel = 'noopener noreferrer';
          a.target = '_blank';
          parent.appendChild(a);
        } else {
          // Any other scheme (javascript:, data:, ...) stays the text it was.
          parent.appendChild(document.createTextNode(m[0]));
        }
      }
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  // ---- API -------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function errorOf(response) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message = `${response.status}: ${body.error.message}`;
    } catch (_) { /* not JSON: the status says it */ }
    return new ApiError(response.status, message);
  }

  async function api(path, init = {}) {
    const headers = new Headers(init.headers || {});
    const key = apiKey();
    if (key) headers.set('Authorization', `Bearer ${key}`);
    const response = await fetch(path, Object.assign({}, init, { headers }));
    if (!response.ok) {
      const error = await errorOf(response);
      if (response.status === 401) askForKey(error.message);
      throw error;
    }
    return response;
  }

  async function loadModels() {
    try {
      const response = await api('/v1/models');
      const body = await response.json();
      models = Array.isArray(body.data) ? body.data : [];
      renderPickers();
      if ($('banner').dataset.source === 'models') {
        showBanner('');
        delete $('banner').dataset.source;
      }
    } catch (e) {
      if (e.status !== 401) {
        showBanner(`Could not list the models: ${e.message}`);
        $('banner').dataset.source = 'models';
      }
    }
  }

  // ---- API key ---------------------------------------------------------------------------
  function askForKey(message) {
    $('key-error').textContent = apiKey() ? message : '';
    $('key-overlay').hidden = false;
    $('key-input').focus();
  }

  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('key-input').value.trim();
    if (!key) {
      $('key-error').textContent = 'Enter a key.';
      return;
    }
    localStorage.setItem(KEY_API_KEY, key);
    $('key-input').value = '';
    $('key-overlay').hidden = true;
    $('forget-key').hidden = false;
    loadModels();
  });

  $('forget-key').addEventListener('click', () => {
    localStorage.removeItem(KEY_API_KEY);
    $('forget-key').hidden = true;
    loadModels();
  });

  // ---- pickers and settings --------------------------------------------------------------
  function renderPickers() {
    const family = $('family');
    const model = $('model');
    family.replaceChildren();
    model.replaceChildren();
    const families = [...new Set(models.map((m) => m.family).filter(Boolean))];
    for (const name of families) family.appendChild(el('option', null, name)).value = name;
    for (const m of models) {
      const facts = [m.family, m.tier, m.loaded ? 'loaded' : 'not loaded'].filter(Boolean).join(', ');
      const option = el('option', null, `${m.id} (${facts})`);
      option.value = m.id;
      model.appendChild(option);
    }
    if (families.includes(settings.family)) family.value = settings.family;
    else settings.family = family.value;
    if (models.some((m) => m.id === settings.model)) model.value = settings.model;
    else settings.model = model.value;
    showRoutingFields();
  }

  function showRoutingFields() {
    $('routing').value = settings.routing;
    $('family-field').hidden = settings.routing !== 'family';
    $('model').disabled = settings.routing !== 'model';
    $('model-field').title = settings.routing === 'model'
      ? 'The model that answers'
      : 'The catalog (routing picks the model)';
  }

  function bindSetting(id, field, parse) {
    const input = $(id);
    input.value = settings[field];
    input.addEventListener('change', () => {
      settings[field] = parse ? parse(input.value) : input.value;
      save(KEY_SETTINGS, settings);
      if (field === 'routing') showRoutingFields();
    });
  }

  const number = (text) => (text.trim() === '' ? '' : Number(text));
  bindSetting('routing', 'routing');
  bindSetting('family', 'family');
  bindSetting('model', 'model');
  bindSetting('tradition', 'tradition');
  bindSetting('system', 'system');
  bindSetting('temperature', 'temperature', number);
  bindSetting('top_p', 'top_p', number);
  bindSetting('max_tokens', 'max_tokens', number);
  bindSetting('tools', 'tools');
  bindSetting('tool_choice', 'tool_choice');

  $('toggle-settings').addEventListener('click', () => {
    const panel = $('settings');
    panel.hidden = !panel.hidden;
    $('toggle-settings').setAttribute('aria-expanded', String(!panel.hidden));
  });

  // ---- conversations ---------------------------------------------------------------------
  function current() {
    return conversations.find((c) => c.id === currentId) || null;
  }

  function newConversation() {
    const conversation = { id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`, title: 'New chat', messages: [] };
    conversations.unshift(conversation);
    currentId = conversation.id;
    saveConversations();
    return conversation;
  }

  function renderConversations() {
    const list = $('conversations');
    list.replaceChildren();
    for (const c of conversations) {
      const li = el('li', c.id === currentId ? 'active' : '');
      const open = el('button', 'open', c.title || 'Untitled');
      open.type = 'button';
      open.title = c.title || '';
      open.addEventListener('click', () => {
        if (running) return;
        currentId = c.id;
        saveConversations();
        closeSidebar();
        render();
      });
      const remove = el('button', 'delete', '×');
      remove.type = 'button';
      remove.setAttribute('aria-label', `Delete conversation: ${c.title}`);
      remove.addEventListener('click', () => {
        if (running && running.conversation === c) return;
        conversations = conversations.filter((x) => x !== c);
        if (currentId === c.id) currentId = conversations.length ? conversations[0].id : null;
        saveConversations();
        render();
      });
      li.append(open, remove);
      list.appendChild(li);
    }
  }

  // ---- messages ----------------------------------------------------------------------------
  function badge(message) {
    const row = el('div', 'badge');
    const add = (field, text, extra) => {
      const span = el('span', extra || '', text);
      span.dataset.field = field;
      row.appendChild(span);
    };
    const meta = message.meta;
    if (meta) {
      if (meta.model) add('model', meta.model);
      if (meta.routing_tier) add('tier', meta.routing_tier, 'tier');
      if (typeof meta.routing_confidence === 'number') add('confidence', `confidence ${meta.routing_confidence.toFixed(2)}`);
      if (meta.routing_mechanism) add('mechanism', meta.routing_mechanism);
      if (meta.tradition) add('tradition', meta.tradition);
    }
    const t = message.timing;
    if (t) {
      if (typeof t.ttft === 'number') add('ttft', `first token ${Math.round(t.ttft)} ms`);
      if (typeof t.tps === 'number') add('tps', `${t.tps.toFixed(1)} tok/s`);
    }
    if (message.finish && message.finish !== 'stop') add('finish', `finish: ${message.finish}`);
    return row.childElementCount ? row : null;
  }

  function copyText(text, button) {
    const done = () => {
      button.textContent = 'Copied';
      setTimeout(() => { button.textContent = 'Copy'; }, 1200);
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, (e) => showBanner(`Could not copy: ${e.message}`));
    } else {
      showBanner('This browser does not allow copying from this page.');
    }
  }

  function messageElement(conversation, index) {
    const m = conversation.messages[index];
    const node = el('article', `msg msg-${m.role}`);
    node.dataset.index = String(index);
    if (m.role === 'assistant') {
      node.dataset.state = m.state || 'done';
      node.dataset.chunks = String(m.chunks || 0);
    }
    node.appendChild(el('div', 'who', m.role === 'user' ? 'You' : (m.meta && m.meta.model) || 'wick'));
    if (m.role === 'user') {
      node.appendChild(el('div', 'body', m.content));
      return node;
    }
    if (m.reasoning) {
      const details = el('details', 'reasoning');
      details.open = Boolean(m.reasoningOpen);
      details.addEventListener('toggle', () => { m.reasoningOpen = details.open; });
      details.appendChild(el('summary', null, m.state === 'streaming' && !m.content ? 'Reasoning…' : 'Reasoning'));
      details.appendChild(renderMarkdown(m.reasoning));
      node.appendChild(details);
    }
    // An answer that was all thinking, calls or an error has no text to show.
    const bare = !m.content && m.state !== 'streaming' && (m.reasoning || (m.tool_calls || []).length || m.error);
    if (!bare) node.appendChild(renderMarkdown(m.content || ''));
    for (const call of m.tool_calls || []) {
      const details = el('details', 'tool-call');
      // The calls are the answer: shown open, unlike the reasoning.
      details.open = true;
      details.appendChild(el('summary', null, `Tool call: ${call.name || '?'}`));
      let args = call.arguments || '';
      try { args = JSON.stringify(JSON.parse(args), null, 2); } catch (_) { /* shown as sent */ }
      const pre = el('pre');
      pre.appendChild(el('code', null, args));
      details.appendChild(pre);
      node.appendChild(details);
    }
    if (m.error) node.appendChild(el('div', 'error', m.error));
    if (m.state === 'stopped') node.appendChild(el('div', 'error', 'Stopped.'));
    const row = badge(m);
    if (row) node.appendChild(row);
    if (m.state !== 'streaming') {
      const actions = el('div', 'actions');
      const copy = el('button', 'copy', 'Copy');
      copy.type = 'button';
      copy.addEventListener('click', () => copyText(m.content || '', copy));
      actions.appendChild(copy);
      if (index === conversation.messages.length - 1 && !running) {
        const again = el('button', 'regenerate', 'Regenerate');
        again.type = 'button';
        again.addEventListener('click', () => regenerate(conversation));
        actions.appendChild(again);
      }
      node.appendChild(actions);
    }
    return node;
  }

  function render() {
    renderConversations();
    const transcript = $('transcript');
    transcript.replaceChildren();
    const conversation = current();
    if (!conversation || !conversation.messages.length) {
      transcript.appendChild(el('p', 'empty',
        'Ask anything. With auto routing, wick picks the model by the tier your question needs; each answer shows the model, tier, confidence and timing.'));
    } else {
      conversation.messages.forEach((_, i) => transcript.appendChild(messageElement(conversation, i)));
    }
    transcript.scrollTop = transcript.scrollHeight;
    $('send').hidden = Boolean(running);
    $('stop').hidden = !running;
  }

  // Redraw only the streaming answer, at most once a frame.
  let redrawPending = false;
  function redrawRunning() {
    if (redrawPending) return;
    redrawPending = true;
    requestAnimationFrame(() => {
      redrawPending = false;
      if (!running || running.conversation !== current()) return;
      const transcript = $('transcript');
      const index = running.conversation.messages.indexOf(running.message);
      const old = transcript.querySelector(`article[data-index="${index}"]`);
      if (!old) return;
      const nearBottom = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 80;
      old.replaceWith(messageElement(running.conversation, index));
      if (nearBottom) transcript.scrollTop = transcript.scrollHeight;
    });
  }

  // ---- sending and streaming -----------------------------------------------------------------
  function requestBody(conversation, upTo) {
    const messages = [];
    if (settings.system.trim()) messages.push({ role: 'system', content: settings.system });
    for (const m of conversation.messages.slice(0, upTo)) {
      if (m.role === 'user') messages.push({ role: 'user', content: m.content });
      else if (m.content) messages.push({ role: 'assistant', content: m.content });
    }
    const body = { messages, stream: true, stream_options: { include_usage: true } };
    // Routing: exactly one mechanism (shared/ROUTING.md, README "Routing").
    if (settings.routing === 'family') body.model_family = settings.family || 'open source';
    else if (settings.routing === 'model') body.model = settings.model;
    else body.auto_routing = true;
    if (settings.tradition) body.tradition = settings.tradition;
    for (const field of ['temperature', 'top_p', 'max_tokens']) {
      if (settings[field] !== '' && settings[field] !== null) body[field] = settings[field];
    }
    if (settings.tools.trim()) {
      let tools;
      try {
        tools = JSON.parse(settings.tools);
      } catch (e) {
        throw new Error(`The tools are not valid JSON: ${e.message}`);
      }
      if (!Array.isArray(tools)) throw new Error('The tools must be a JSON array.');
      if (tools.length) {
        body.tools = tools;
        body.tool_choice = settings.tool_choice || 'auto';
      }
    }
    return body;
  }

  function applyChunk(message, chunk, timing) {
    if (chunk.routing_mechanism) {
      message.meta = {
        model: chunk.model,
        provider: chunk.provider,
        model_family: chunk.model_family,
        routing_mechanism: chunk.routing_mechanism,
        routing_tier: chunk.routing_tier,
        routing_confidence: chunk.routing_confidence,
        tradition: chunk.tradition,
      };
    }
    if (chunk.error) message.error = chunk.error.message || JSON.stringify(chunk.error);
    if (chunk.usage) message.usage = chunk.usage;
    const choice = Array.isArray(chunk.choices) ? chunk.choices[0] : null;
    if (!choice) return;
    const delta = choice.delta || {};
    let produced = false;
    if (typeof delta.content === 'string' && delta.content) {
      message.content += delta.content;
      produced = true;
    }
    const thought = delta.reasoning_content || delta.reasoning;
    if (typeof thought === 'string' && thought) {
      message.reasoning = (message.reasoning || '') + thought;
      produced = true;
    }
    for (const call of delta.tool_calls || []) {
      const at = call.index || 0;
      message.tool_calls[at] = message.tool_calls[at] || { id: '', name: '', arguments: '' };
      const slot = message.tool_calls[at];
      if (call.id) slot.id = call.id;
      if (call.function && call.function.name) slot.name = call.function.name;
      if (call.function && call.function.arguments) slot.arguments += call.function.arguments;
      produced = true;
    }
    if (produced) {
      message.chunks = (message.chunks || 0) + 1;
      if (timing.first === null) timing.first = performance.now();
    }
    if (choice.finish_reason) message.finish = choice.finish_reason;
  }

  async function stream(conversation, message, upTo) {
    const controller = new AbortController();
    running = { controller, conversation, message };
    render();
    const timing = { start: performance.now(), first: null };
    try {
      const body = requestBody(conversation, upTo);
      const response = await api('/v2/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      let finished = false;
      while (!finished) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r/g, '');
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
          if (!data) continue;
          if (data === '[DONE]') {
            finished = true;
            break;
          }
          let chunk;
          try {
            chunk = JSON.parse(data);
          } catch (_) {
            message.error = `The server sent a chunk that is not JSON: ${data.slice(0, 200)}`;
            continue;
          }
          applyChunk(message, chunk, timing);
        }
        redrawRunning();
      }
      if (!finished && !message.error) message.error = 'The stream ended before [DONE].';
      message.state = message.error ? 'error' : 'done';
    } catch (e) {
      if (e.name === 'AbortError') {
        message.state = 'stopped';
      } else {
        message.state = 'error';
        message.error = e instanceof ApiError ? e.message : `Request failed: ${e.message}`;
      }
    }
    const end = performance.now();
    if (timing.first !== null) {
      const tokens = message.usage && message.usage.completion_tokens ? message.usage.completion_tokens : message.chunks;
      const seconds = (end - timing.first) / 1000;
      message.timing = { ttft: timing.first - timing.start };
      // Tokens after the first, over the time they took.
      if (seconds > 0 && tokens > 1) message.timing.tps = (tokens - 1) / seconds;
    }
    running = null;
    saveConversations();
    render();
    loadModels();
  }

  function send(text) {
    if (running || !text.trim()) return;
    showBanner('');
    const conversation = current() || newConversation();
    conversation.messages.push({ role: 'user', content: text });
    if (conversation.title === 'New chat') conversation.title = text.trim().split('\n')[0].slice(0, 60);
    conversation.messages.push(newAnswer());
    // Most recent conversation first.
    conversations = [conversation, ...conversations.filter((c) => c !== conversation)];
    saveConversations();
    const answer = conversation.messages[conversation.messages.length - 1];
    stream(conversation, answer, conversation.messages.length - 1);
  }

  function newAnswer() {
    return { role: 'assistant', content: '', reasoning: '', tool_calls: [], meta: null, timing: null, error: null, state: 'streaming', chunks: 0 };
  }

  function regenerate(conversation) {
    if (running) return;
    const last = conversation.messages[conversation.messages.length - 1];
    if (!last || last.role !== 'assistant') return;
    conversation.messages[conversation.messages.length - 1] = newAnswer();
    stream(conversation, conversation.messages[conversation.messages.length - 1], conversation.messages.length - 1);
  }

  // ---- layout and keyboard -----------------------------------------------------------------
  function closeSidebar() {
    document.body.classList.remove('sidebar-open');
    $('scrim').hidden = true;
  }
  $('toggle-sidebar').addEventListener('click', () => {
    const open = !document.body.classList.contains('sidebar-open');
    document.body.classList.toggle('sidebar-open', open);
    $('scrim').hidden = !open;
  });
  $('scrim').addEventListener('click', closeSidebar);

  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('input');
    const text = input.value;
    if (!text.trim() || running) return;
    input.value = '';
    send(text);
  });
  $('input').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('stop').addEventListener('click', () => {
    if (running) running.controller.abort();
  });
  $('new-chat').addEventListener('click', () => {
    if (running) return;
    newConversation();
    closeSidebar();
    render();
    $('input').focus();
  });
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      if (running) running.controller.abort();
      else closeSidebar();
    } else if ((event.ctrlKey || event.metaKey) && event.shiftKey && (event.key === 'O' || event.key === 'o')) {
      event.preventDefault();
      $('new-chat').click();
    }
  });

  // ---- start --------------------------------------------------------------------------------
  // An answer cut off by a closed tab was left "streaming": it is stopped now.
  for (const c of conversations) {
    for (const m of c.messages || []) {
      if (m.state === 'streaming') m.state = 'stopped';
      if (m.role === 'assistant' && !Array.isArray(m.tool_calls)) m.tool_calls = [];
    }
  }
  $('forget-key').hidden = !apiKey();
  showRoutingFields();
  render();
  loadModels();
  $('input').focus();
})();
