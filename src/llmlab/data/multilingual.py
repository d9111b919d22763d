"""Parallel sentences in seven scripts, and code-mixed text, for tokenizer experiments.

    parallel_sentences(3, seed=0)        # [{"en": "Omar goes to the park at 7 o'clock.", "de": ..., "ja": ...}, ...]
    language_corpus("ru", 5000, seed=0)  # ~5,000 characters of Russian, one sentence per line
    code_mixed(4, seed=0)                # Hinglish chat lines, Python with Cyrillic / kanji identifiers, ...

A sentence is a *frame* (who, where, when, what) drawn from a seeded RNG, then rendered by a
per-language template from small word lists written for this module:

    frame ("go", person=Omar, place=park, hour=7)
      en  Omar goes to the park at 7 o'clock.        ru  Омар идёт в парк в 7 часов.
      de  Omar geht um 7 Uhr in den Park.            el  Ο Ομάρ πηγαίνει στο πάρκο στις 7.
      hi  उमर 7 बजे पार्क जाता है।                       ar  يذهب عمر إلى الحديقة في الساعة 7.
      ja  オマルは7時に公園へ行きます。

so the same seed gives the same content in every language: what the per-language token
"premium" needs. Languages: en, de (Latin with umlauts), ru (Cyrillic), el (Greek),
hi (Devanagari), ar (Arabic, right to left), ja (kanji + kana, no spaces).

Grammar is handled only where the templates need it: Hindi and Arabic verbs agree with the
person's gender, Greek names carry their article, Russian hours are 5-12 (always "часов").
Left out: variety beyond a few hundred distinct sentences per language, punctuation
conventions beyond the sentence end, and any claim of natural word frequencies; this is a
controlled corpus for comparing tokenizers, not a language model's training set.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from llmlab.errors import UserError

LANGUAGES = ("en", "de", "ru", "el", "hi", "ar", "ja")

# Each person: gender, then the name per language (Greek with its article, lowercase).
PEOPLE: tuple[tuple[str, dict[str, str]], ...] = (
    ("f", {"en": "Anna", "de": "Anna", "ru": "Анна", "el": "η Άννα", "hi": "अन्ना", "ar": "آنا", "ja": "アンナ"}),
    ("f", {"en": "Maria", "de": "Maria", "ru": "Мария", "el": "η Μαρία", "hi": "मारिया", "ar": "ماريا",
           "ja": "マリア"}),
    ("f", {"en": "Sara", "de": "Sara", "ru": "Сара", "el": "η Σάρα", "hi": "सारा", "ar": "سارة", "ja": "サラ"}),
    ("m", {"en": "David", "de": "David", "ru": "Давид", "el": "ο Δαβίδ", "hi": "डेविड", "ar": "داود",
           "ja": "デイビッド"}),
    ("m", {"en": "Omar", "de": "Omar", "ru": "Омар", "el": "ο Ομάρ", "hi": "उमर", "ar": "عمر", "ja": "オマル"}),
    ("m", {"en": "Ivan", "de": "Iwan", "ru": "Иван", "el": "ο Ιβάν", "hi": "इवान", "ar": "إيفان", "ja": "イワン"}),
)
PLACES: tuple[dict[str, str], ...] = (  # "to the <place>" as each template needs it
    {"en": "market", "de": "zum Markt", "ru": "на рынок", "el": "στην αγορά", "hi": "बाज़ार", "ar": "السوق",
     "ja": "市場"},
    {"en": "school", "de": "zur Schule", "ru": "в школу", "el": "στο σχολείο", "hi": "स्कूल", "ar": "المدرسة",
     "ja": "学校"},
    {"en": "park", "de": "in den Park", "ru": "в парк", "el": "στο πάρκο", "hi": "पार्क", "ar": "الحديقة",
     "ja": "公園"},
    {"en": "library", "de": "in die Bibliothek", "ru": "в библиотеку", "el": "στη βιβλιοθήκη", "hi": "पुस्तकालय",
     "ar": "المكتبة", "ja": "図書館"},
)
FOODS: tuple[dict[str, str], ...] = (
    {"en": "bread", "de": "Brot", "ru": "хлеб", "el": "ψωμί", "hi": "रोटी", "ar": "الخبز", "ja": "パン"},
    {"en": "rice", "de": "Reis", "ru": "рис", "el": "ρύζι", "hi": "चावल", "ar": "الأرز", "ja": "ご飯"},
    {"en": "tea", "de": "Tee", "ru": "чай", "el": "τσάι", "hi": "चाय", "ar": "الشاي", "ja": "お茶"},
    {"en": "coffee", "de": "Kaffee", "ru": "кофе", "el": "καφέ", "hi": "कॉफ़ी", "ar": "القهوة", "ja": "コーヒー"},
    {"en": "milk", "de": "Milch", "ru": "молоко", "el": "γάλα", "hi": "दूध", "ar": "الحليب", "ja": "牛乳"},
    {"en": "soup", "de": "Suppe", "ru": "суп", "el": "σούπα", "hi": "सूप", "ar": "الحساء", "ja": "スープ"},
)
WEATHER: tuple[dict[str, str], ...] = (  # predicate adjectives for "the weather" (ru feminine, el masculine)
    {"en": "warm", "de": "warm", "ru": "тёплая", "el": "ζεστός", "hi": "गर्म", "ar": "حار", "ja": "暖かい"},
    {"en": "cold", "de": "kalt", "ru": "холодная", "el": "κρύος", "hi": "ठंडा", "ar": "بارد", "ja": "寒い"},
    {"en": "nice", "de": "schön", "ru": "хорошая", "el": "ωραίος", "hi": "अच्छा", "ar": "جميل", "ja": "いい"},
    {"en": "bad", "de": "schlecht", "ru": "плохая", "el": "κακός", "hi": "ख़राब", "ar": "سيئ", "ja": "悪い"},
)
CITIES: tuple[dict[str, str], ...] = (  # "in <city>" (ru locative, el with article)
    {"en": "London", "de": "London", "ru": "Лондоне", "el": "στο Λονδίνο", "hi": "लंदन", "ar": "لندن",
     "ja": "ロンドン"},
    {"en": "Berlin", "de": "Berlin", "ru": "Берлине", "el": "στο Βερολίνο", "hi": "बर्लिन", "ar": "برلين",
     "ja": "ベルリン"},
    {"en": "Moscow", "de": "Moskau", "ru": "Москве", "el": "στη Μόσχα", "hi": "मॉस्को", "ar": "موسكو",
     "ja": "モスクワ"},
    {"en": "Athens", "de": "Athen", "ru": "Афинах", "el": "στην Αθήνα", "hi": "एथेंस", "ar": "أثينا", "ja": "アテネ"},
    {"en": "Delhi", "de": "Delhi", "ru": "Дели", "el": "στο Δελχί", "hi": "दिल्ली", "ar": "دلهي", "ja": "デリー"},
    {"en": "Cairo", "de": "Kairo", "ru": "Каире", "el": "στο Κάιρο", "hi": "काहिरा", "ar": "القاهرة", "ja": "カイロ"},
    {"en": "Tokyo", "de": "Tokio", "ru": "Токио", "el": "στο Τόκιο", "hi": "टोक्यो", "ar": "طوكيو", "ja": "東京"},
)
# Verbs that agree with the subject's gender: (masculine, feminine).
_HI = {"go": ("जाता", "जाती"), "live": ("रहता", "रहती")}
_AR = {"go": ("يذهب", "تذهب"), "live": ("يعيش", "تعيش")}

Frame = dict[str, int]  # slot -> index into the word lists (and numbers)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _person(frame: Frame, lang: str, key: str = "person") -> str:
    return PEOPLE[frame[key]][1][lang]


def _gender(frame: Frame) -> int:
    return 0 if PEOPLE[frame["person"]][0] == "m" else 1


def _go(f: Frame, lang: str) -> str:
    p, place, h = _person(f, lang), PLACES[f["place"]][lang], f["hour"]
    return {
        "en": f"{p} goes to the {place} at {h} o'clock.",
        "de": f"{p} geht um {h} Uhr {place}.",
        "ru": f"{p} идёт {place} в {h} часов.",
        "el": f"{_cap(p)} πηγαίνει {place} στις {h}.",
        "hi": f"{p} {h} बजे {place} {_HI['go'][_gender(f)]} है।",
        "ar": f"{_AR['go'][_gender(f)]} {p} إلى {place} في الساعة {h}.",
        "ja": f"{p}は{h}時に{place}へ行きます。",
    }[lang]


def _want(f: Frame, lang: str) -> str:
    p, food = _person(f, lang), FOODS[f["food"]][lang]
    return {
        "en": f"{p} wants {food}.",
        "de": f"{p} möchte {food}.",
        "ru": f"{p} хочет {food}.",
        "el": f"{_cap(p)} θέλει {food}.",
        "hi": f"{p} को {food} चाहिए।",
        "ar": f"{('يريد', 'تريد')[_gender(f)]} {p} {food}.",
        "ja": f"{p}は{food}が欲しいです。",
    }[lang]


def _weather(f: Frame, lang: str) -> str:
    adj = WEATHER[f["weather"]][lang]
    return {
        "en": f"The weather is {adj} today.",
        "de": f"Das Wetter ist heute {adj}.",
        "ru": f"Сегодня погода {adj}.",
        "el": f"Σήμερα ο καιρός είναι {adj}.",
        "hi": f"आज मौसम {adj} है।",
        "ar": f"الطقس {adj} اليوم.",
        "ja": f"今日は天気が{adj}です。",
    }[lang]


def _live(f: Frame, lang: str) -> str:
    p, city = _person(f, lang), CITIES[f["city"]][lang]
    return {
        "en": f"{p} lives in {city}.",
        "de": f"{p} wohnt in {city}.",
        "ru": f"{p} живёт в {city}.",
        "el": f"{_cap(p)} μένει {city}.",
        "hi": f"{p} {city} में {_HI['live'][_gender(f)]} है।",
        "ar": f"{_AR['live'][_gender(f)]} {p} في {city}.",
        "ja": f"{p}は{city}に住んでいます。",
    }[lang]


def _friends(f: Frame, lang: str) -> str:
    p, q = _person(f, lang), _person(f, lang, "other")
    return {
        "en": f"{p} and {q} are friends.",
        "de": f"{p} und {q} sind befreundet.",
        "ru": f"{p} и {q} — друзья.",
        "el": f"{_cap(p)} και {q} είναι φίλοι.",
        "hi": f"{p} और {q} दोस्त हैं।",
        "ar": f"{p} و{q} أصدقاء.",
        "ja": f"{p}と{q}は友達です。",
    }[lang]


def _train(f: Frame, lang: str) -> str:
    h, m = f["hour"], f["minute"]
    return {
        "en": f"The train leaves at {h}:{m:02d}.",
        "de": f"Der Zug fährt um {h}:{m:02d} ab.",
        "ru": f"Поезд отправляется в {h}:{m:02d}.",
        "el": f"Το τρένο φεύγει στις {h}:{m:02d}.",
        "hi": f"ट्रेन {h}:{m:02d} बजे चलती है।",
        "ar": f"يغادر القطار في الساعة {h}:{m:02d}.",
        "ja": f"電車は{h}時{m}分に出発します。",
    }[lang]


TEMPLATES: dict[str, Callable[[Frame, str], str]] = {"go": _go, "want": _want, "weather": _weather,
                                                      "live": _live, "friends": _friends, "train": _train}
_KINDS = tuple(TEMPLATES)


def draw_frame(rng: random.Random) -> tuple[str, Frame]:
    """One sentence's content: a template name and its slots (all slots drawn, unused ones ignored)."""
    kind = rng.choice(_KINDS)
    person, other = rng.sample(range(len(PEOPLE)), 2)
    return kind, {"person": person, "other": other, "place": rng.randrange(len(PLACES)),
                  "food": rng.randrange(len(FOODS)), "weather": rng.randrange(len(WEATHER)),
                  "city": rng.randrange(len(CITIES)), "hour": rng.randint(5, 12),
                  "minute": rng.choice((5, 10, 15, 20, 30, 45, 50))}


def _check_languages(languages: Sequence[str]) -> None:
    unknown = [lang for lang in languages if lang not in LANGUAGES]
    if unknown or not languages:
        raise UserError(f"unknown language {unknown[0] if unknown else '(none given)'!r}; "
                        f"choose from {', '.join(LANGUAGES)}")


def parallel_sentences(n: int, seed: int, languages: Sequence[str] = LANGUAGES) -> list[dict[str, str]]:
    """`n` sentences, each rendered in every language of `languages` (same seed, same content)."""
    _check_languages(languages)
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        kind, frame = draw_frame(rng)
        rows.append({lang: TEMPLATES[kind](frame, lang) for lang in languages})
    return rows


def language_corpus(lang: str, chars: int, seed: int) -> str:
    """At least `chars` characters of `lang`, one sentence per line; the sentences of
    `language_corpus(other, ..., seed)` are their translations, line for line."""
    _check_languages([lang])
    rng = random.Random(seed)
    lines: list[str] = []
    size = 0
    while size < chars:
        kind, frame = draw_frame(rng)
        lines.append(TEMPLATES[kind](frame, lang))
        size += len(lines[-1]) + 1
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- code-mixed text

_HINGLISH = (
    "Kal {time} baje meeting hai, please late mat hona yaar.",
    "Mujhe lagta hai ki the {thing} is not ready, ek baar check kar lo.",
    "Bhai {name}, {thing} ka update bhej do jaldi, boss is asking.",
    "{name} ne bola ki {thing} kal tak ho jayega, but I am not sure.",
)
_HINDI_ENGLISH = (
    "मैं कल office जाऊँगा, then we can discuss the {thing}.",
    "{name} का {thing} बहुत अच्छा है, really impressive work!",
    "आज की meeting {time} बजे है, please join on time.",
    "यह {thing} अभी ready नहीं है, let's wait one more day.",
)
_THINGS = ("report", "presentation", "code review", "design", "budget", "release")
_NAMES = ("Rahul", "Priya", "Amit", "Neha", "Vikram", "Ananya")

# Python with comments, identifiers and strings in other languages.
_CODE = (
    '# {ru_comment}\ndef {ru_func}({ru_var}):\n    return {ru_var} * {n}\n\nprint({ru_func}({m}))\n',
    '# {de_comment}\ndef größe_{n}(liste):\n    """Gibt die Größe zurück."""\n    return len(liste) + {m}\n',
    '{ja_var} = "{ja_name}"\n# {ja_comment}\nif len({ja_var}) > {n}:\n    print(f"こんにちは、{{{ja_var}}}さん")\n',
    'def total(items):\n    # {hi_comment}\n    s = 0\n    for x in items:\n        s += x  # {hi_note}\n'
    '    return s / {n}\n',
    'for i in range({n}):\n    if i % {m} == 0:\n        print("Ошибка:", i)  # {ru_comment}\n',
)
_SLOTS: dict[str, tuple[str, ...]] = {
    "ru_comment": ("считаем сумму элементов", "проверяем входные данные", "возвращаем результат",
                   "это временное решение"),
    "ru_func": ("удвоить", "посчитать", "обработать"),
    "ru_var": ("значение", "число", "данные"),
    "de_comment": ("Berechnet die Länge der Liste", "Prüft die Eingabe", "Nur für Testzwecke"),
    "ja_var": ("名前", "ユーザー名", "氏名"),
    "ja_name": ("アンナ", "田中", "佐藤"),
    "ja_comment": ("名前が長い場合だけ挨拶する", "ユーザーを確認する", "ここは後で直す"),
    "hi_comment": ("सभी संख्याओं का योग निकालो", "औसत की गणना करो"),
    "hi_note": ("जोड़ते रहो", "यहाँ ध्यान दो"),
}


def _fill(template: str, rng: random.Random) -> str:
    values = {key: rng.choice(options) for key, options in _SLOTS.items()}
    return template.format(n=rng.randint(2, 9), m=rng.randint(10, 99), time=rng.randint(2, 11),
                            thing=rng.choice(_THINGS), name=rng.choice(_NAMES), **values)


def code_mixed(n: int, seed: int) -> list[str]:
    """`n` code-mixed samples, in turn: Hinglish (romanized Hindi + English), Devanagari Hindi +
    English, Python with Russian/German/Japanese/Hindi comments, identifiers or strings."""
    rng = random.Random(seed)
    pools = (_HINGLISH, _HINDI_ENGLISH, _CODE)
    return [_fill(rng.choice(pools[i % len(pools)]), rng) for i in range(n)]
