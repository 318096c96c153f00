"""What the bot says, in Kazakh, Russian and English.

Every reply is built from these templates with ``str.format`` fields, so a translation can move
the fields but never add new ones (``tests/kopir/test_bot_logic.py`` checks each language has
the same keys and fields). The wording of verdicts follows the offline verifier page
(``kopir/static/verifier.page.js``), so a citizen reads the same words in both places. Nothing
here is political: a searched phone shows proxy data and how to use it.
"""

from __future__ import annotations

from typing import Literal

Language = Literal["kk", "ru", "en"]
LANGUAGES: tuple[Language, ...] = ("kk", "ru", "en")

TEXTS: dict[Language, dict[str, str]] = {
    "en": {
        "start": (
            "This bot gives you Telegram proxies signed by their operators, and checks links "
            "that others send you.\n\n/proxy: your own proxies, with QR codes\n"
            "/verify LINK, or forward any message with links: is it trustworthy?\n"
            "/report LINK: a proxy from us does not work for you\n/lang kk, ru or en\n/help"
        ),
        "help": (
            "/proxy: your own proxies as signed links and QR codes. Tap a link, and Telegram "
            "adds the proxy.\n/verify LINK, or forward a message: each proxy link in it is "
            "checked against the operators' keys.\n/report LINK: tell us a proxy from us does "
            "not work for you.\n/lang kk, ru or en: the language of the replies.\n"
            "Only use proxies from sources you trust: a fake proxy can see who you are."
        ),
        "lang_set": "Replies are now in English.",
        "lang_choose": "Choose a language: /lang kk (қазақша), /lang ru (русский), /lang en.",
        "no_links": "There is no proxy link in this message. Send /proxy for your own proxies.",
        "proxy_head": "Your proxies ({count}). Tap a link, or scan its QR code from another phone:",
        "proxy_until": "Valid until {until}. Send /proxy again after that.",
        "proxy_limited": (
            "You already got proxies recently, so these are the same ones. "
            "Ask again tomorrow if they do not work."
        ),
        "proxy_none": "There is no working proxy for you right now. Try again later.",
        "proxy_unavailable": "Proxies cannot be handed out right now. Try again later.",
        "verify_head": "Links found: {count}.",
        "verify_more": "{count} more links were not checked; send them separately.",
        "report_usage": (
            "Send /report with the proxy link that does not work, e.g. /report "
            "https://t.me/proxy?..."
        ),
        "report_thanks": "Thank you: we noted that this proxy does not work for you.",
        "report_again": "You already reported this proxy; thank you.",
        "report_unknown": "This proxy is not one of ours, so we cannot check it.",
        "flood": "Too many messages. Wait a minute, then try again.",
        "valid": (
            "✅ Trustworthy: signed with the key {name}, valid until {until}. You can open it in "
            "Telegram."
        ),
        "expired": "⌛ Expired: this link was valid until {until}. Send /proxy for a new one.",
        "unknown-key": (
            "⚠️ Unknown key: signed with key {kid}, which is not trusted. Do not use it."
        ),
        "revoked-key": (
            "⛔ Revoked key: the key {name} was revoked on {when}. Do not use this link."
        ),
        "bad-signature": (
            "⛔ Tampered or forged: the signature does not match, so someone changed or made up "
            "this link. Do not use it."
        ),
        "unsigned": (
            "⚠️ Not signed: anyone could have made this link. Do not use it unless you know who "
            "sent it."
        ),
        "malformed": "❓ Not a correct proxy link: {what}.",
    },
    "ru": {
        "start": (
            "Этот бот выдаёт прокси для Telegram, подписанные их операторами, и проверяет "
            "ссылки, которые вам присылают.\n\n/proxy: ваши прокси с QR-кодами\n"
            "/verify ССЫЛКА или перешлите сообщение со ссылками: можно ли им доверять?\n"
            "/report ССЫЛКА: наш прокси у вас не работает\n/lang kk, ru или en\n/help"
        ),
        "help": (
            "/proxy: ваши прокси в виде подписанных ссылок и QR-кодов. Нажмите на ссылку, и "
            "Telegram сам подключит прокси.\n/verify ССЫЛКА или пересланное сообщение: каждая "
            "ссылка на прокси проверяется по ключам операторов.\n/report ССЫЛКА: сообщите, что "
            "наш прокси у вас не работает.\n/lang kk, ru или en: язык ответов.\n"
            "Пользуйтесь только прокси из надёжных источников: поддельный прокси видит, кто вы."
        ),
        "lang_set": "Теперь ответы на русском.",
        "lang_choose": "Выберите язык: /lang kk (қазақша), /lang ru (русский), /lang en (English).",
        "no_links": "В этом сообщении нет ссылки на прокси. Отправьте /proxy, чтобы получить свои.",
        "proxy_head": (
            "Ваши прокси ({count}). Нажмите на ссылку или отсканируйте QR-код с другого телефона:"
        ),
        "proxy_until": "Действуют до {until}. После этого отправьте /proxy ещё раз.",
        "proxy_limited": (
            "Вы недавно уже получили прокси, поэтому это те же самые. "
            "Если они не работают, попросите снова завтра."
        ),
        "proxy_none": "Сейчас для вас нет работающего прокси. Попробуйте позже.",
        "proxy_unavailable": "Сейчас прокси выдать нельзя. Попробуйте позже.",
        "verify_head": "Найдено ссылок: {count}.",
        "verify_more": "Ещё {count} ссылок не проверено; пришлите их отдельно.",
        "report_usage": (
            "Отправьте /report со ссылкой на неработающий прокси, например /report "
            "https://t.me/proxy?..."
        ),
        "report_thanks": "Спасибо: мы отметили, что этот прокси у вас не работает.",
        "report_again": "Вы уже сообщали об этом прокси; спасибо.",
        "report_unknown": "Этот прокси не наш, мы не можем его проверить.",
        "flood": "Слишком много сообщений. Подождите минуту и попробуйте снова.",
        "valid": (
            "✅ Надёжная: подписана ключом {name}, действует до {until}. Её можно открыть в "
            "Telegram."
        ),
        "expired": (
            "⌛ Срок истёк: ссылка действовала до {until}. Отправьте /proxy, чтобы получить новую."
        ),
        "unknown-key": (
            "⚠️ Неизвестный ключ: подписана ключом {kid}, которому нет доверия. Не используйте её."
        ),
        "revoked-key": "⛔ Отозванный ключ: ключ {name} отозван {when}. Не используйте эту ссылку.",
        "bad-signature": (
            "⛔ Подделка: подпись не совпадает, кто-то изменил или подделал эту ссылку. Не "
            "используйте её."
        ),
        "unsigned": (
            "⚠️ Не подписана: такую ссылку мог сделать кто угодно. Не используйте её, если не "
            "знаете отправителя."
        ),
        "malformed": "❓ Неправильная ссылка на прокси: {what}.",
    },
    "kk": {
        "start": (
            "Бұл бот операторлары қол қойған Telegram проксилерін береді және сізге "
            "жіберілген сілтемелерді тексереді.\n\n/proxy: QR-кодтарымен өз проксилеріңіз\n"
            "/verify СІЛТЕМЕ немесе сілтемесі бар хабарды жіберіңіз: оған сенуге бола ма?\n"
            "/report СІЛТЕМЕ: біздің прокси сізде жұмыс істемейді\n/lang kk, ru немесе en\n/help"
        ),
        "help": (
            "/proxy: қол қойылған сілтемелер мен QR-кодтар түріндегі өз проксилеріңіз. "
            "Сілтемені басыңыз: Telegram проксиді өзі қосады.\n/verify СІЛТЕМЕ немесе "
            "қайта жіберілген хабар: әр прокси сілтемесі операторлардың кілттерімен "
            "тексеріледі.\n/report СІЛТЕМЕ: біздің прокси сізде жұмыс істемейтінін айтыңыз.\n"
            "/lang kk, ru немесе en: жауаптардың тілі.\n"
            "Тек сенімді көзден келген проксилерді пайдаланыңыз: жалған прокси сіздің кім "
            "екеніңізді көреді."
        ),
        "lang_set": "Енді жауаптар қазақ тілінде.",
        "lang_choose": (
            "Тілді таңдаңыз: /lang kk (қазақша), /lang ru (русский), /lang en (English)."
        ),
        "no_links": (
            "Бұл хабарда прокси сілтемесі жоқ. Өз проксилеріңізді алу үшін /proxy жіберіңіз."
        ),
        "proxy_head": (
            "Сіздің проксилеріңіз ({count}). Сілтемені басыңыз немесе QR-кодты басқа телефонмен "
            "сканерлеңіз:"
        ),
        "proxy_until": "{until} дейін жарамды. Одан кейін /proxy қайта жіберіңіз.",
        "proxy_limited": (
            "Сіз жақында прокси алдыңыз, сондықтан бұлар сол проксилер. "
            "Олар жұмыс істемесе, ертең қайта сұраңыз."
        ),
        "proxy_none": "Қазір сізге жұмыс істейтін прокси жоқ. Кейінірек қайталаңыз.",
        "proxy_unavailable": "Қазір прокси беру мүмкін емес. Кейінірек қайталаңыз.",
        "verify_head": "Табылған сілтемелер: {count}.",
        "verify_more": "Тағы {count} сілтеме тексерілмеді; оларды бөлек жіберіңіз.",
        "report_usage": (
            "Жұмыс істемейтін прокси сілтемесімен /report жіберіңіз, мысалы /report "
            "https://t.me/proxy?..."
        ),
        "report_thanks": "Рақмет: бұл прокси сізде жұмыс істемейтінін белгіледік.",
        "report_again": "Сіз бұл прокси туралы хабарлағансыз; рақмет.",
        "report_unknown": "Бұл прокси біздікі емес, оны тексере алмаймыз.",
        "flood": "Хабар тым көп. Бір минут күтіп, қайталаңыз.",
        "valid": (
            "✅ Сенімді: {name} кілтімен қол қойылған, {until} дейін жарамды. Оны Telegram-да "
            "ашуға болады."
        ),
        "expired": (
            "⌛ Мерзімі өтті: бұл сілтеме {until} дейін жарамды болды. Жаңасын алу үшін /proxy "
            "жіберіңіз."
        ),
        "unknown-key": "⚠️ Белгісіз кілт: сенімсіз {kid} кілтімен қол қойылған. Оны пайдаланбаңыз.",
        "revoked-key": (
            "⛔ Кері қайтарылған кілт: {name} кілті {when} кері қайтарылды. Бұл сілтемені "
            "пайдаланбаңыз."
        ),
        "bad-signature": (
            "⛔ Жалған: қолтаңба сәйкес келмейді, сілтемені біреу өзгерткен немесе қолдан жасаған."
            " Оны пайдаланбаңыз."
        ),
        "unsigned": (
            "⚠️ Қол қойылмаған: мұндай сілтемені кез келген адам жасай алады. Жіберушіні "
            "білмесеңіз, пайдаланбаңыз."
        ),
        "malformed": "❓ Қате прокси сілтемесі: {what}.",
    },
}

LANGUAGE_NAMES: dict[Language, str] = {"kk": "қазақша", "ru": "русский", "en": "English"}


def text(language: Language, key: str, **fields: object) -> str:
    """The template ``key`` in ``language``, with ``fields`` filled in."""
    return TEXTS[language][key].format(**fields)


def language_of(code: str | None, default: Language) -> Language:
    """A language from a Telegram client's ``language_code`` (``ru``, ``kk``, ``en-GB``...)."""
    short = (code or "").split("-")[0].lower()
    for language in LANGUAGES:
        if short == language:
            return language
    return default


__all__ = ["LANGUAGES", "LANGUAGE_NAMES", "TEXTS", "Language", "language_of", "text"]
