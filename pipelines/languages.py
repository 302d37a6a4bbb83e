"""ISO 639-1 language codes, the one language identifier used everywhere in linguaforge."""

from __future__ import annotations

from linguaforge.pipelines.errors import InputError

# code, name | code, name | ... (the names are the ones prompts and reports show)
_TABLE = """
aa Afar | ab Abkhazian | ae Avestan | af Afrikaans | ak Akan | am Amharic | an Aragonese | ar Arabic |
as Assamese | av Avaric | ay Aymara | az Azerbaijani | ba Bashkir | be Belarusian | bg Bulgarian |
bi Bislama | bm Bambara | bn Bengali | bo Tibetan | br Breton | bs Bosnian | ca Catalan | ce Chechen |
ch Chamorro | co Corsican | cr Cree | cs Czech | cu Church Slavic | cv Chuvash | cy Welsh | da Danish |
de German | dv Divehi | dz Dzongkha | ee Ewe | el Greek | en English | eo Esperanto | es Spanish |
et Estonian | eu Basque | fa Persian | ff Fulah | fi Finnish | fj Fijian | fo Faroese | fr French |
fy Western Frisian | ga Irish | gd Gaelic | gl Galician | gn Guarani | gu Gujarati | gv Manx |
ha Hausa | he Hebrew | hi Hindi | ho Hiri Motu | hr Croatian | ht Haitian | hu Hungarian |
hy Armenian | hz Herero | ia Interlingua | id Indonesian | ie Interlingue | ig Igbo | ii Sichuan Yi |
ik Inupiaq | io Ido | is Icelandic | it Italian | iu Inuktitut | ja Japanese | jv Javanese |
ka Georgian | kg Kongo | ki Kikuyu | kj Kuanyama | kk Kazakh | kl Kalaallisut | km Khmer | kn Kannada |
ko Korean | kr Kanuri | ks Kashmiri | ku Kurdish | kv Komi | kw Cornish | ky Kirghiz | la Latin |
lb Luxembourgish | lg Ganda | li Limburgan | ln Lingala | lo Lao | lt Lithuanian | lu Luba-Katanga |
lv Latvian | mg Malagasy | mh Marshallese | mi Maori | mk Macedonian | ml Malayalam | mn Mongolian |
mr Marathi | ms Malay | mt Maltese | my Burmese | na Nauru | nb Norwegian Bokmål | nd North Ndebele |
ne Nepali | ng Ndonga | nl Dutch | nn Norwegian Nynorsk | no Norwegian | nr South Ndebele | nv Navajo |
ny Chichewa | oc Occitan | oj Ojibwa | om Oromo | or Oriya | os Ossetian | pa Panjabi | pi Pali |
pl Polish | ps Pushto | pt Portuguese | qu Quechua | rm Romansh | rn Rundi | ro Romanian | ru Russian |
rw Kinyarwanda | sa Sanskrit | sc Sardinian | sd Sindhi | se Northern Sami | sg Sango | si Sinhala |
sk Slovak | sl Slovenian | sm Samoan | sn Shona | so Somali | sq Albanian | sr Serbian | ss Swati |
st Southern Sotho | su Sundanese | sv Swedish | sw Swahili | ta Tamil | te Telugu | tg Tajik |
th Thai | ti Tigrinya | tk Turkmen | tl Tagalog | tn Tswana | to Tonga | tr Turkish | ts Tsonga |
tt Tatar | tw Twi | ty Tahitian | ug Uighur | uk Ukrainian | ur Urdu | uz Uzbek | ve Venda |
vi Vietnamese | vo Volapük | wa Walloon | wo Wolof | xh Xhosa | yi Yiddish | yo Yoruba | za Zhuang |
zh Chinese | zu Zulu
"""
ISO_639_1: dict[str, str] = dict(entry.strip().split(" ", 1) for entry in _TABLE.split("|"))


class UnknownLanguageError(InputError):
    """A language code that is not ISO 639-1."""


# country codes and benchmark folder names that are often taken for language codes
_COMMON_MISTAKES = {"jp": "ja", "jap": "ja", "cn": "zh", "gr": "el", "dk": "da", "cz": "cs", "ua": "uk",
                    "kr": "ko", "vn": "vi", "iw": "he", "in": "id", "ji": "yi"}


def check_language(code: str, where: str = "language") -> str:
    """Return `code` if it is an ISO 639-1 code, else raise an error that names where it came from."""
    if code in ISO_639_1:
        return code
    hint = ""
    lowered = code.strip().lower()
    if lowered in ISO_639_1:
        hint = f" (did you mean {lowered!r}?)"
    elif lowered in _COMMON_MISTAKES:
        hint = f" (the ISO 639-1 code for {ISO_639_1[_COMMON_MISTAKES[lowered]]} is {_COMMON_MISTAKES[lowered]!r})"
    elif by_name := [c for c, n in ISO_639_1.items() if n.lower() == lowered]:
        hint = f" (the ISO 639-1 code for {ISO_639_1[by_name[0]]} is {by_name[0]!r})"
    shown = repr(code) if len(repr(code)) <= 40 else f"{repr(code)[:40]}… ({len(code)} characters)"
    raise UnknownLanguageError(f"{where}: {shown} is not an ISO 639-1 language code{hint}")


def check_languages(codes: list[str], where: str = "languages") -> list[str]:
    """A list of ISO 639-1 codes, each checked, none twice (a language scored twice would be counted twice)."""
    for i, code in enumerate(codes):
        check_language(code, f"{where}[{i}]")
    if dupes := sorted({c for c in codes if codes.count(c) > 1}):
        raise InputError(f"{where} lists {', '.join(dupes)} more than once")
    return codes


def language_name(code: str) -> str:
    return ISO_639_1[check_language(code)]
