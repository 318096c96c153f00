/* kopir offline verifier: the page around verifier.js (texts in kk, ru, en, and the form).

The verdict goes into one ARIA live region, so a screen reader announces it. Every text is set
with textContent, never parsed as HTML. The "Open in Telegram" button exists only in the box of
a link that verified.
*/
"use strict";

(function () {
  const core = globalThis.kopirVerifier;

  const TEXT = {
    en: {
      title: "Check a Telegram proxy link",
      intro:
        "This page works without the internet. Paste the SMS or the link you received: " +
        "it checks that a trusted operator signed the link and that it has not expired.",
      label: "SMS text or link",
      hint: "Paste the whole message; every proxy link in it is checked.",
      check: "Check",
      result: "Result",
      none: "No proxy link found. Paste the whole SMS, or a link that starts with https://t.me/proxy or tg://proxy.",
      valid: "Trusted: signed by {name}",
      validBody: "Valid until {until}. You can open it in Telegram.",
      expired: "Expired",
      expiredBody: "This link was valid until {until}. Ask for a new one.",
      "unknown-key": "Unknown key",
      "unknown-keyBody":
        "This link was signed by key {kid}, which this page does not trust. Do not use it.",
      "revoked-key": "Revoked key",
      "revoked-keyBody": "Key {name} was withdrawn on {when}. Do not use this link.",
      "bad-signature": "Tampered",
      "bad-signatureBody":
        "The signature does not match: someone changed or forged this link. Do not use it.",
      malformed: "Malformed link",
      malformedBody: "This is not a correct signed proxy link: {what}.",
      linkOf: "Link {n} of {count}",
      server: "Server",
      port: "Port",
      open: "Open in Telegram",
      keys: "Keys this page trusts",
      trustInfo: "Trust root version {version}, valid until {until}. Its SHA-256: {sha}.",
      trustExpired: "This page's trust root expired on {until}. Get a newer copy of this page.",
      noKeys: "This trust root names no key for links, so no link can be trusted.",
      keyLine: "{name}: key {id}",
      revokedKey: " (revoked {when})",
      engineWebcrypto: "Signatures are checked with the browser's WebCrypto.",
      engineJs: "Signatures are checked with this page's own Ed25519 code.",
      made: "Page made: ",
      language: "Language",
    },
    ru: {
      title: "Проверка ссылки на прокси Telegram",
      intro:
        "Эта страница работает без интернета. Вставьте полученное SMS или ссылку: страница " +
        "проверит, что ссылку подписал доверенный оператор и что срок её действия не истёк.",
      label: "Текст SMS или ссылка",
      hint: "Вставьте сообщение целиком: будет проверена каждая ссылка на прокси в нём.",
      check: "Проверить",
      result: "Результат",
      none: "Ссылка на прокси не найдена. Вставьте SMS целиком или ссылку, начинающуюся с https://t.me/proxy или tg://proxy.",
      valid: "Надёжная: подписана ключом {name}",
      validBody: "Действительна до {until}. Её можно открыть в Telegram.",
      expired: "Срок действия истёк",
      expiredBody: "Ссылка действовала до {until}. Попросите новую.",
      "unknown-key": "Неизвестный ключ",
      "unknown-keyBody":
        "Ссылка подписана ключом {kid}, которому эта страница не доверяет. Не используйте её.",
      "revoked-key": "Отозванный ключ",
      "revoked-keyBody": "Ключ {name} отозван {when}. Не используйте эту ссылку.",
      "bad-signature": "Подделка",
      "bad-signatureBody":
        "Подпись не совпадает: ссылку изменили или подделали. Не используйте её.",
      malformed: "Неправильная ссылка",
      malformedBody: "Это не правильная подписанная ссылка на прокси: {what}.",
      linkOf: "Ссылка {n} из {count}",
      server: "Сервер",
      port: "Порт",
      open: "Открыть в Telegram",
      keys: "Ключи, которым доверяет эта страница",
      trustInfo: "Корень доверия версии {version}, действует до {until}. Его SHA-256: {sha}.",
      trustExpired:
        "Корень доверия этой страницы истёк {until}. Найдите более новую копию страницы.",
      noKeys:
        "В этом корне доверия нет ключей для ссылок, поэтому ни одной ссылке нельзя доверять.",
      keyLine: "{name}: ключ {id}",
      revokedKey: " (отозван {when})",
      engineWebcrypto: "Подписи проверяются через WebCrypto браузера.",
      engineJs: "Подписи проверяются собственным кодом Ed25519 этой страницы.",
      made: "Страница создана: ",
      language: "Язык",
    },
    kk: {
      title: "Telegram прокси сілтемесін тексеру",
      intro:
        "Бұл бет интернетсіз жұмыс істейді. Алған SMS-ті немесе сілтемені қойыңыз: бет " +
        "сілтемеге сенімді оператор қол қойғанын және оның мерзімі өтпегенін тексереді.",
      label: "SMS мәтіні немесе сілтеме",
      hint: "Хабарды толық қойыңыз: ондағы әр прокси сілтемесі тексеріледі.",
      check: "Тексеру",
      result: "Нәтиже",
      none: "Прокси сілтемесі табылмады. SMS-ті толық қойыңыз немесе https://t.me/proxy не tg://proxy деп басталатын сілтемені қойыңыз.",
      valid: "Сенімді: {name} кілтімен қол қойылған",
      validBody: "{until} дейін жарамды. Оны Telegram-да ашуға болады.",
      expired: "Мерзімі өтті",
      expiredBody: "Бұл сілтеме {until} дейін жарамды болды. Жаңасын сұраңыз.",
      "unknown-key": "Белгісіз кілт",
      "unknown-keyBody":
        "Сілтемеге {kid} кілтімен қол қойылған, бұл бет оған сенбейді. Оны пайдаланбаңыз.",
      "revoked-key": "Кері қайтарылған кілт",
      "revoked-keyBody": "{name} кілті {when} кері қайтарылды. Бұл сілтемені пайдаланбаңыз.",
      "bad-signature": "Жалған",
      "bad-signatureBody":
        "Қолтаңба сәйкес келмейді: сілтемені біреу өзгерткен немесе қолдан жасаған. Оны пайдаланбаңыз.",
      malformed: "Қате сілтеме",
      malformedBody: "Бұл дұрыс қол қойылған прокси сілтемесі емес: {what}.",
      linkOf: "{count} сілтеменің {n}-сі",
      server: "Сервер",
      port: "Порт",
      open: "Telegram-да ашу",
      keys: "Бұл бет сенетін кілттер",
      trustInfo: "Сенім түбірінің нұсқасы {version}, {until} дейін жарамды. Оның SHA-256: {sha}.",
      trustExpired:
        "Бұл беттің сенім түбірінің мерзімі {until} өтті. Беттің жаңа көшірмесін табыңыз.",
      noKeys:
        "Бұл сенім түбірінде сілтемелерге арналған кілт жоқ, сондықтан ешбір сілтемеге сенуге болмайды.",
      keyLine: "{name}: кілт {id}",
      revokedKey: " ({when} кері қайтарылған)",
      engineWebcrypto: "Қолтаңбаларды браузердің WebCrypto құралы тексереді.",
      engineJs: "Қолтаңбаларды осы беттің өз Ed25519 коды тексереді.",
      made: "Бет жасалған уақыт: ",
      language: "Тіл",
    },
  };

  // What is wrong with a malformed link; English reads exactly as signing/link.py says it.
  const MALFORMED = {
    en: {
      "too-long": "longer than 2048 characters",
      "not-ascii": "a link is ASCII text; other characters must be percent-encoded",
      "not-proxy": "not a tg://proxy, tg://socks or t.me proxy link",
      fragment: "link has a #fragment",
      "no-value": "parameter {0} has no value",
      duplicate: "duplicate parameter {0}",
      "unknown-param": "unknown parameter {0}",
      "bad-percent": "a parameter is not valid percent-encoded UTF-8",
      "no-server": "missing server",
      "bad-server": "server is not a host name or IP address",
      "port-digits": "port must be a decimal number",
      "port-range": "port must be 1-65535 written without leading zeros",
      "no-secret": "missing secret",
      "secret-encoding": "secret is neither hex nor base64url",
      "fake-tls-domain": "fake-TLS secret has a domain that is not a host name",
      "secret-kind": "secret must be 16 bytes, dd+16 bytes or ee+16 bytes+domain",
      "socks-pair": "socks link needs both user and pass, or neither",
      "socks-user": "socks user may not contain ':' or a line break",
      "partly-signed": "kid, exp and sig must all be present",
      kid: "kid must be 11 base64url characters",
      sig: "sig must be 86 base64url characters",
      "exp-format": "exp must be YYYYMMDDHH",
      "exp-date": "exp is not a real date and hour",
      unsigned: "link is not signed (no kid, exp and sig)",
    },
    ru: {
      "too-long": "длиннее 2048 символов",
      "not-ascii": "ссылка пишется латиницей; остальные символы кодируются через %",
      "not-proxy": "это не ссылка tg://proxy, tg://socks или t.me на прокси",
      fragment: "в ссылке есть #фрагмент",
      "no-value": "у параметра {0} нет значения",
      duplicate: "параметр {0} повторяется",
      "unknown-param": "неизвестный параметр {0}",
      "bad-percent": "параметр неправильно закодирован через % (не UTF-8)",
      "no-server": "нет сервера",
      "bad-server": "сервер не является ни именем хоста, ни IP-адресом",
      "port-digits": "порт должен быть десятичным числом",
      "port-range": "порт должен быть от 1 до 65535, без нулей в начале",
      "no-secret": "нет секрета (secret)",
      "secret-encoding": "секрет не в hex и не в base64url",
      "fake-tls-domain": "домен в секрете fake-TLS не является именем хоста",
      "secret-kind": "секрет должен быть 16 байт, dd+16 байт или ee+16 байт+домен",
      "socks-pair": "ссылке socks нужны и user, и pass, или ни того, ни другого",
      "socks-user": "имя пользователя socks не может содержать ':' или перевод строки",
      "partly-signed": "должны быть все три параметра: kid, exp и sig",
      kid: "kid должен состоять из 11 символов base64url",
      sig: "sig должен состоять из 86 символов base64url",
      "exp-format": "exp должен иметь вид ГГГГММДДЧЧ",
      "exp-date": "exp не является настоящей датой и часом",
      unsigned: "ссылка не подписана (нет kid, exp и sig)",
    },
    kk: {
      "too-long": "2048 таңбадан ұзын",
      "not-ascii": "сілтеме латын әріптерімен жазылады; басқа таңбалар % арқылы кодталады",
      "not-proxy": "бұл tg://proxy, tg://socks немесе t.me прокси сілтемесі емес",
      fragment: "сілтемеде #фрагмент бар",
      "no-value": "{0} параметрінің мәні жоқ",
      duplicate: "{0} параметрі қайталанады",
      "unknown-param": "белгісіз параметр {0}",
      "bad-percent": "параметр % арқылы қате кодталған (UTF-8 емес)",
      "no-server": "сервер жоқ",
      "bad-server": "сервер хост аты да, IP мекенжайы да емес",
      "port-digits": "порт ондық сан болуы керек",
      "port-range": "порт 1-ден 65535-ке дейін, басында нөлсіз жазылуы керек",
      "no-secret": "құпия кілт (secret) жоқ",
      "secret-encoding": "secret hex те, base64url де емес",
      "fake-tls-domain": "fake-TLS secret ішіндегі домен хост аты емес",
      "secret-kind": "secret 16 байт, dd+16 байт немесе ee+16 байт+домен болуы керек",
      "socks-pair":
        "socks сілтемесінде user мен pass екеуі де болуы керек, не екеуі де болмауы керек",
      "socks-user": "socks пайдаланушы атында ':' немесе жол ауысуы болмауы керек",
      "partly-signed": "kid, exp және sig үшеуі де болуы керек",
      kid: "kid 11 base64url таңбасынан тұруы керек",
      sig: "sig 86 base64url таңбасынан тұруы керек",
      "exp-format": "exp ЖЖЖЖААККСС түрінде болуы керек",
      "exp-date": "exp нақты күн мен сағат емес",
      unsigned: "сілтемеге қол қойылмаған (kid, exp және sig жоқ)",
    },
  };

  const LANGUAGES = ["kk", "ru", "en"];
  const flags = new URLSearchParams(location.hash.slice(1));
  const state = { lang: pickLanguage(), results: null, checks: 0 };
  const data = JSON.parse(document.getElementById("kopir-trust").textContent);
  const trust = core.loadTrust(data.root);
  const engineReady = core.chooseEngine(flags.get("engine") === "js");
  let engine = null;

  function pickLanguage() {
    const asked = flags.get("lang") || (navigator.language || "en").slice(0, 2).toLowerCase();
    return LANGUAGES.includes(asked) ? asked : "en";
  }

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, (all, name) =>
      name in values ? String(values[name]) : all,
    );
  }

  const t = (name, values = {}) => fill(TEXT[state.lang][name], values);

  function malformedText(code, arg, lang = state.lang) {
    return fill(MALFORMED[lang][code], { 0: arg });
  }

  function hourLabel(seconds) {
    const iso = new Date(seconds * 1000).toISOString();
    return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
  }

  function element(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    node.append(...children);
    return node;
  }

  // -- rendering ----------------------------------------------------------------------------

  function verdictTexts(result) {
    const key = result.key || {};
    const values = {
      name: key.name,
      kid: result.kidHex,
      when: key.revokedText ? hourLabel(key.revoked) : "",
      until: result.expires ? hourLabel(result.expires) : "",
      what: result.reason === "malformed" ? malformedText(result.code, result.arg) : "",
    };
    return [t(result.reason, values), t(result.reason + "Body", values)];
  }

  function renderResult(result, index, count) {
    const [title, body] = verdictTexts(result);
    const good = result.reason === "valid";
    const box = element("article", {
      class: `result ${good ? "good" : "bad"}`,
      "data-verdict": result.reason,
    });
    const heading = count > 1 ? `${t("linkOf", { n: index + 1, count })}: ${title}` : title;
    box.append(element("h3", {}, heading), element("p", {}, body));
    if (result.link && result.link.server) {
      box.append(
        element(
          "dl",
          {},
          element("dt", {}, t("server")),
          element("dd", {}, result.link.server),
          element("dt", {}, t("port")),
          element("dd", {}, String(result.link.port)),
        ),
      );
    }
    if (good) box.append(element("a", { class: "open", href: result.open }, t("open")));
    return box;
  }

  function renderResults() {
    const region = document.getElementById("verdict");
    if (state.results === null) return region.replaceChildren();
    if (state.results.length === 0) {
      return region.replaceChildren(
        element("p", { class: "result bad", "data-verdict": "none" }, t("none")),
      );
    }
    const count = state.results.length;
    region.replaceChildren(...state.results.map((result, i) => renderResult(result, i, count)));
  }

  function renderTrust() {
    const info = document.getElementById("trust-info");
    const until = hourLabel(trust.expiresAt);
    info.textContent = t("trustInfo", { version: trust.version, until, sha: data.sha256 });
    const warning = document.getElementById("trust-expired");
    warning.hidden = Date.now() / 1000 < trust.expiresAt;
    warning.textContent = t("trustExpired", { until });
    const linkKeys = [...trust.linkKeys.values()];
    const items = linkKeys.map((key) => {
      const revoked = key.revoked === null ? "" : t("revokedKey", { when: hourLabel(key.revoked) });
      return element("li", {}, t("keyLine", { name: key.name, id: key.hexId }) + revoked);
    });
    if (items.length === 0) items.push(element("li", {}, t("noKeys")));
    document.getElementById("keys").replaceChildren(...items);
  }

  function renderLanguage() {
    document.documentElement.lang = state.lang;
    document.title = t("title");
    for (const node of document.querySelectorAll("[data-text]"))
      node.textContent = t(node.dataset.text);
    for (const button of document.querySelectorAll("[data-lang]")) {
      button.setAttribute("aria-pressed", String(button.dataset.lang === state.lang));
    }
    document.getElementById("languages").setAttribute("aria-label", t("language"));
    if (engine)
      document.getElementById("engine").textContent = t(
        engine.name === "js" ? "engineJs" : "engineWebcrypto",
      );
    renderTrust();
    renderResults();
  }

  // -- behaviour ----------------------------------------------------------------------------

  async function check() {
    engine = await engineReady;
    const text = document.getElementById("message").value;
    const now = Date.now() / 1000;
    const links = core.findLinks(text);
    state.results = await Promise.all(
      links.map((link) => core.verifyLink(link, trust, now, engine)),
    );
    state.checks += 1;
    renderLanguage();
    document.getElementById("verdict").dataset.checks = String(state.checks);
  }

  function start() {
    document.getElementById("form").addEventListener("submit", (event) => {
      event.preventDefault();
      check();
    });
    document.getElementById("message").addEventListener("input", (event) => {
      if (event.inputType === "insertFromPaste") check();
    });
    for (const button of document.querySelectorAll("[data-lang]")) {
      button.addEventListener("click", () => {
        state.lang = button.dataset.lang;
        renderLanguage();
      });
    }
    engineReady.then((chosen) => {
      engine = chosen;
      document.body.dataset.engine = chosen.name;
      renderLanguage();
    });
    renderLanguage();
  }

  core.malformedText = malformedText;
  core.MALFORMED_CODES = MALFORMED.en;
  core.trust = trust;
  start();
})();
