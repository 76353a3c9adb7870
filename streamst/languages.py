"""Languages: the codes users type, FLORES-200 and Whisper codes, prompt names, and latency units.

Every FLORES-200 language (204 codes, `ace_Arab` … `zul_Latn`) has one `Language`, plus the three
Whisper languages FLORES-200 lacks (Breton, Hawaiian, Latin). `resolve` accepts any of a language's
codes or names, case-insensitively:

    >>> resolve("EN").flores_code
    'eng_Latn'
    >>> resolve("zh-TW").name
    'Traditional Chinese'
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from typing import Literal

from streamst.errors import LanguageError

LatencyUnit = Literal["word", "char"]


@dataclass(frozen=True)
class Language:
    """One language (in one script) as the engine, the translator prompt and the metrics see it."""

    code: str  # what users type: ISO 639-1 where one exists ("en", "zh"), else ISO 639-3 ("yue", "ceb")
    flores_code: str | None  # FLORES-200 code ("eng_Latn"); None for the Whisper-only languages
    name: str  # English name used in translation prompts ("Simplified Chinese")
    whisper_code: str | None  # code Whisper transcribes it with ("zh"); None if Whisper cannot
    latency_unit: LatencyUnit  # unit latency is counted in: "char" for scripts written without spaces
    bleu_tokenizer: str  # ideal sacrebleu tokenizer: "zh", "ja-mecab", "ko-mecab", "char" or "13a"


# (code, FLORES-200 code, English name, Whisper code). Where FLORES-200 has a language in two scripts,
# the usual script takes the bare code and the other gets a script subtag ("ace" / "ace-Arab").
_TABLE: tuple[tuple[str, str | None, str, str | None], ...] = (
    ("ace-Arab", "ace_Arab", "Acehnese (Arabic script)", None),
    ("ace", "ace_Latn", "Acehnese (Latin script)", None),
    ("acm", "acm_Arab", "Mesopotamian Arabic", "ar"),
    ("acq", "acq_Arab", "Ta'izzi-Adeni Arabic", "ar"),
    ("aeb", "aeb_Arab", "Tunisian Arabic", "ar"),
    ("af", "afr_Latn", "Afrikaans", "af"),
    ("ajp", "ajp_Arab", "South Levantine Arabic", "ar"),
    ("ak", "aka_Latn", "Akan", None),
    ("sq", "als_Latn", "Albanian", "sq"),
    ("am", "amh_Ethi", "Amharic", "am"),
    ("apc", "apc_Arab", "North Levantine Arabic", "ar"),
    ("ar", "arb_Arab", "Arabic", "ar"),
    ("ar-Latn", "arb_Latn", "Arabic (Latin script)", None),
    ("ars", "ars_Arab", "Najdi Arabic", "ar"),
    ("ary", "ary_Arab", "Moroccan Arabic", "ar"),
    ("arz", "arz_Arab", "Egyptian Arabic", "ar"),
    ("as", "asm_Beng", "Assamese", "as"),
    ("ast", "ast_Latn", "Asturian", None),
    ("awa", "awa_Deva", "Awadhi", None),
    ("ay", "ayr_Latn", "Central Aymara", None),
    ("azb", "azb_Arab", "South Azerbaijani", None),
    ("az", "azj_Latn", "Azerbaijani", "az"),
    ("ba", "bak_Cyrl", "Bashkir", "ba"),
    ("bm", "bam_Latn", "Bambara", None),
    ("ban", "ban_Latn", "Balinese", None),
    ("be", "bel_Cyrl", "Belarusian", "be"),
    ("bem", "bem_Latn", "Bemba", None),
    ("bn", "ben_Beng", "Bengali", "bn"),
    ("bho", "bho_Deva", "Bhojpuri", None),
    ("bjn-Arab", "bjn_Arab", "Banjar (Arabic script)", None),
    ("bjn", "bjn_Latn", "Banjar (Latin script)", None),
    ("bo", "bod_Tibt", "Tibetan", "bo"),
    ("bs", "bos_Latn", "Bosnian", "bs"),
    ("bug", "bug_Latn", "Buginese", None),
    ("bg", "bul_Cyrl", "Bulgarian", "bg"),
    ("ca", "cat_Latn", "Catalan", "ca"),
    ("ceb", "ceb_Latn", "Cebuano", None),
    ("cs", "ces_Latn", "Czech", "cs"),
    ("cjk", "cjk_Latn", "Chokwe", None),
    ("ckb", "ckb_Arab", "Central Kurdish", None),
    ("crh", "crh_Latn", "Crimean Tatar", None),
    ("cy", "cym_Latn", "Welsh", "cy"),
    ("da", "dan_Latn", "Danish", "da"),
    ("de", "deu_Latn", "German", "de"),
    ("dik", "dik_Latn", "Southwestern Dinka", None),
    ("dyu", "dyu_Latn", "Dyula", None),
    ("dz", "dzo_Tibt", "Dzongkha", None),
    ("el", "ell_Grek", "Greek", "el"),
    ("en", "eng_Latn", "English", "en"),
    ("eo", "epo_Latn", "Esperanto", None),
    ("et", "est_Latn", "Estonian", "et"),
    ("eu", "eus_Latn", "Basque", "eu"),
    ("ee", "ewe_Latn", "Ewe", None),
    ("fo", "fao_Latn", "Faroese", "fo"),
    ("fj", "fij_Latn", "Fijian", None),
    ("fi", "fin_Latn", "Finnish", "fi"),
    ("fon", "fon_Latn", "Fon", None),
    ("fr", "fra_Latn", "French", "fr"),
    ("fur", "fur_Latn", "Friulian", None),
    ("fuv", "fuv_Latn", "Nigerian Fulfulde", None),
    ("om", "gaz_Latn", "West Central Oromo", None),
    ("gd", "gla_Latn", "Scottish Gaelic", None),
    ("ga", "gle_Latn", "Irish", None),
    ("gl", "glg_Latn", "Galician", "gl"),
    ("gn", "grn_Latn", "Guarani", None),
    ("gu", "guj_Gujr", "Gujarati", "gu"),
    ("ht", "hat_Latn", "Haitian Creole", "ht"),
    ("ha", "hau_Latn", "Hausa", "ha"),
    ("he", "heb_Hebr", "Hebrew", "he"),
    ("hi", "hin_Deva", "Hindi", "hi"),
    ("hne", "hne_Deva", "Chhattisgarhi", None),
    ("hr", "hrv_Latn", "Croatian", "hr"),
    ("hu", "hun_Latn", "Hungarian", "hu"),
    ("hy", "hye_Armn", "Armenian", "hy"),
    ("ig", "ibo_Latn", "Igbo", None),
    ("ilo", "ilo_Latn", "Ilocano", None),
    ("id", "ind_Latn", "Indonesian", "id"),
    ("is", "isl_Latn", "Icelandic", "is"),
    ("it", "ita_Latn", "Italian", "it"),
    ("jv", "jav_Latn", "Javanese", "jw"),
    ("ja", "jpn_Jpan", "Japanese", "ja"),
    ("kab", "kab_Latn", "Kabyle", None),
    ("kac", "kac_Latn", "Jingpho", None),
    ("kam", "kam_Latn", "Kamba", None),
    ("kn", "kan_Knda", "Kannada", "kn"),
    ("ks", "kas_Arab", "Kashmiri (Arabic script)", None),
    ("ks-Deva", "kas_Deva", "Kashmiri (Devanagari script)", None),
    ("ka", "kat_Geor", "Georgian", "ka"),
    ("kk", "kaz_Cyrl", "Kazakh", "kk"),
    ("kbp", "kbp_Latn", "Kabiyè", None),
    ("kea", "kea_Latn", "Kabuverdianu", None),
    ("mn", "khk_Cyrl", "Mongolian", "mn"),
    ("km", "khm_Khmr", "Khmer", "km"),
    ("ki", "kik_Latn", "Kikuyu", None),
    ("rw", "kin_Latn", "Kinyarwanda", None),
    ("ky", "kir_Cyrl", "Kyrgyz", None),
    ("kmb", "kmb_Latn", "Kimbundu", None),
    ("ku", "kmr_Latn", "Northern Kurdish", None),
    ("knc-Arab", "knc_Arab", "Central Kanuri (Arabic script)", None),
    ("knc", "knc_Latn", "Central Kanuri (Latin script)", None),
    ("kg", "kon_Latn", "Kikongo", None),
    ("ko", "kor_Hang", "Korean", "ko"),
    ("lo", "lao_Laoo", "Lao", "lo"),
    ("lij", "lij_Latn", "Ligurian", None),
    ("li", "lim_Latn", "Limburgish", None),
    ("ln", "lin_Latn", "Lingala", "ln"),
    ("lt", "lit_Latn", "Lithuanian", "lt"),
    ("lmo", "lmo_Latn", "Lombard", None),
    ("ltg", "ltg_Latn", "Latgalian", None),
    ("lb", "ltz_Latn", "Luxembourgish", "lb"),
    ("lua", "lua_Latn", "Luba-Kasai", None),
    ("lg", "lug_Latn", "Ganda", None),
    ("luo", "luo_Latn", "Luo", None),
    ("lus", "lus_Latn", "Mizo", None),
    ("lv", "lvs_Latn", "Latvian", "lv"),
    ("mag", "mag_Deva", "Magahi", None),
    ("mai", "mai_Deva", "Maithili", None),
    ("ml", "mal_Mlym", "Malayalam", "ml"),
    ("mr", "mar_Deva", "Marathi", "mr"),
    ("min-Arab", "min_Arab", "Minangkabau (Arabic script)", None),
    ("min", "min_Latn", "Minangkabau (Latin script)", None),
    ("mk", "mkd_Cyrl", "Macedonian", "mk"),
    ("mt", "mlt_Latn", "Maltese", "mt"),
    ("mni", "mni_Beng", "Meitei (Bengali script)", None),
    ("mos", "mos_Latn", "Mossi", None),
    ("mi", "mri_Latn", "Maori", "mi"),
    ("my", "mya_Mymr", "Burmese", "my"),
    ("nl", "nld_Latn", "Dutch", "nl"),
    ("nn", "nno_Latn", "Norwegian Nynorsk", "nn"),
    ("nb", "nob_Latn", "Norwegian Bokmål", "no"),
    ("ne", "npi_Deva", "Nepali", "ne"),
    ("nso", "nso_Latn", "Northern Sotho", None),
    ("nus", "nus_Latn", "Nuer", None),
    ("ny", "nya_Latn", "Nyanja", None),
    ("oc", "oci_Latn", "Occitan", "oc"),
    ("or", "ory_Orya", "Odia", None),
    ("pag", "pag_Latn", "Pangasinan", None),
    ("pa", "pan_Guru", "Punjabi", "pa"),
    ("pap", "pap_Latn", "Papiamento", None),
    ("ps", "pbt_Arab", "Pashto", "ps"),
    ("fa", "pes_Arab", "Persian", "fa"),
    ("mg", "plt_Latn", "Malagasy", "mg"),
    ("pl", "pol_Latn", "Polish", "pl"),
    ("pt", "por_Latn", "Portuguese", "pt"),
    ("prs", "prs_Arab", "Dari", "fa"),
    ("qu", "quy_Latn", "Ayacucho Quechua", None),
    ("ro", "ron_Latn", "Romanian", "ro"),
    ("rn", "run_Latn", "Rundi", None),
    ("ru", "rus_Cyrl", "Russian", "ru"),
    ("sg", "sag_Latn", "Sango", None),
    ("sa", "san_Deva", "Sanskrit", "sa"),
    ("sat", "sat_Olck", "Santali", None),
    ("scn", "scn_Latn", "Sicilian", None),
    ("shn", "shn_Mymr", "Shan", None),
    ("si", "sin_Sinh", "Sinhala", "si"),
    ("sk", "slk_Latn", "Slovak", "sk"),
    ("sl", "slv_Latn", "Slovenian", "sl"),
    ("sm", "smo_Latn", "Samoan", None),
    ("sn", "sna_Latn", "Shona", "sn"),
    ("sd", "snd_Arab", "Sindhi", "sd"),
    ("so", "som_Latn", "Somali", "so"),
    ("st", "sot_Latn", "Southern Sotho", None),
    ("es", "spa_Latn", "Spanish", "es"),
    ("sc", "srd_Latn", "Sardinian", None),
    ("sr", "srp_Cyrl", "Serbian", "sr"),
    ("ss", "ssw_Latn", "Swati", None),
    ("su", "sun_Latn", "Sundanese", "su"),
    ("sv", "swe_Latn", "Swedish", "sv"),
    ("sw", "swh_Latn", "Swahili", "sw"),
    ("szl", "szl_Latn", "Silesian", None),
    ("ta", "tam_Taml", "Tamil", "ta"),
    ("taq", "taq_Latn", "Tamasheq (Latin script)", None),
    ("taq-Tfng", "taq_Tfng", "Tamasheq (Tifinagh script)", None),
    ("tt", "tat_Cyrl", "Tatar", "tt"),
    ("te", "tel_Telu", "Telugu", "te"),
    ("tg", "tgk_Cyrl", "Tajik", "tg"),
    ("tl", "tgl_Latn", "Tagalog", "tl"),
    ("th", "tha_Thai", "Thai", "th"),
    ("ti", "tir_Ethi", "Tigrinya", None),
    ("tpi", "tpi_Latn", "Tok Pisin", None),
    ("tn", "tsn_Latn", "Tswana", None),
    ("ts", "tso_Latn", "Tsonga", None),
    ("tk", "tuk_Latn", "Turkmen", "tk"),
    ("tum", "tum_Latn", "Tumbuka", None),
    ("tr", "tur_Latn", "Turkish", "tr"),
    ("tw", "twi_Latn", "Twi", None),
    ("tzm", "tzm_Tfng", "Central Atlas Tamazight", None),
    ("ug", "uig_Arab", "Uyghur", None),
    ("uk", "ukr_Cyrl", "Ukrainian", "uk"),
    ("umb", "umb_Latn", "Umbundu", None),
    ("ur", "urd_Arab", "Urdu", "ur"),
    ("uz", "uzn_Latn", "Uzbek", "uz"),
    ("vec", "vec_Latn", "Venetian", None),
    ("vi", "vie_Latn", "Vietnamese", "vi"),
    ("war", "war_Latn", "Waray", None),
    ("wo", "wol_Latn", "Wolof", None),
    ("xh", "xho_Latn", "Xhosa", None),
    ("yi", "ydd_Hebr", "Yiddish", "yi"),
    ("yo", "yor_Latn", "Yoruba", "yo"),
    ("yue", "yue_Hant", "Cantonese", "yue"),
    ("zh", "zho_Hans", "Simplified Chinese", "zh"),
    ("zh-Hant", "zho_Hant", "Traditional Chinese", "zh"),
    ("ms", "zsm_Latn", "Malay", "ms"),
    ("zu", "zul_Latn", "Zulu", None),
    ("br", None, "Breton", "br"),
    ("haw", None, "Hawaiian", "haw"),
    ("la", None, "Latin", "la"),
)

N_FLORES_LANGUAGES = 204
"""FLORES-200 has 204 language-script codes."""

WHISPER_LANGUAGE_CODES: tuple[str, ...] = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id",
    "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg",
    "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br",
    "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so",
    "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt",
    "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
)  # fmt: skip
"""Whisper's language tokens in its own order (openai/whisper `tokenizer.LANGUAGES`); `yue` needs large-v3."""

# Other spellings users type, lowercased, mapped to a `code` from the table.
_ALIASES: dict[str, str] = {
    "zh-cn": "zh", "zh-sg": "zh", "zh-hans": "zh", "cmn": "zh", "cmn-hans": "zh", "chinese": "zh",
    "mandarin": "zh", "chinese (simplified)": "zh",
    "zh-tw": "zh-Hant", "zh-hk": "zh-Hant", "zh-mo": "zh-Hant", "cmn-hant": "zh-Hant",
    "chinese (traditional)": "zh-Hant",
    "zh-yue": "yue", "yue chinese": "yue",
    "modern standard arabic": "ar", "modern standard arabic (romanized)": "ar-Latn",
    "tosk albanian": "sq", "north azerbaijani": "az", "standard tibetan": "bo", "halh mongolian": "mn",
    "standard latvian": "lv", "eastern panjabi": "pa", "panjabi": "pa", "southern pashto": "ps",
    "pushto": "ps", "western persian": "fa", "farsi": "fa", "plateau malagasy": "mg",
    "northern uzbek": "uz", "eastern yiddish": "yi", "standard malay": "ms", "oromo": "om",
    "kurmanji": "ku", "kurdish": "ku", "sorani": "ckb", "norwegian": "nb", "norwegian bokmal": "nb",
    "bokmål": "nb", "bokmal": "nb", "no": "nb", "nynorsk": "nn", "myanmar": "my", "haitian": "ht",
    "letzeburgesch": "lb", "valencian": "ca", "flemish": "nl", "moldavian": "ro", "moldovan": "ro",
    "sinhalese": "si", "castilian": "es", "uighur": "ug", "kirghiz": "ky", "oriya": "or",
    "filipino": "tl", "fil": "tl", "fulfulde": "fuv", "quechua": "qu", "aymara": "ay", "iw": "he",
    "chichewa": "ny", "chewa": "ny", "luganda": "lg", "manipuri": "mni", "slovene": "sl",
    "gaelic": "gd", "kongo": "kg", "dinka": "dik", "tamazight": "tzm", "kanuri": "knc", "meitei": "mni",
}  # fmt: skip

_CHAR_UNIT_SCRIPTS = frozenset({"Hans", "Hant", "Jpan", "Hang", "Thai", "Laoo", "Khmr", "Mymr", "Tibt"})
"""Scripts whose latency is counted in characters: CJK (as SimulEval does) and scripts without word spaces."""

_BLEU_TOKENIZERS: dict[str, str] = {
    "zho_Hans": "zh", "zho_Hant": "zh", "yue_Hant": "zh", "jpn_Jpan": "ja-mecab", "kor_Hang": "ko-mecab",
}  # fmt: skip

_EXAMPLE_CODES = "en, zh, de, fr, es, ja"


def _make_language(code: str, flores_code: str | None, name: str, whisper_code: str | None) -> Language:
    script = flores_code.split("_")[1] if flores_code else "Latn"
    if flores_code in _BLEU_TOKENIZERS:
        bleu_tokenizer = _BLEU_TOKENIZERS[flores_code]
    elif script in _CHAR_UNIT_SCRIPTS:
        bleu_tokenizer = "char"
    else:
        bleu_tokenizer = "13a"
    latency_unit: LatencyUnit = "char" if script in _CHAR_UNIT_SCRIPTS else "word"
    return Language(code, flores_code, name, whisper_code, latency_unit, bleu_tokenizer)


@functools.lru_cache(maxsize=1)
def all_languages() -> tuple[Language, ...]:
    """Every known language: the 204 FLORES-200 ones in FLORES order, then Whisper's extra three."""
    return tuple(_make_language(*row) for row in _TABLE)


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, Language]:
    """Lowercased key → language. Earlier kinds of key win: code, FLORES, Whisper, name, alias."""
    languages = all_languages()
    by_code = {lang.code: lang for lang in languages}
    index: dict[str, Language] = {}
    for lang in languages:
        index.setdefault(lang.code.lower(), lang)
    for lang in languages:
        if lang.flores_code:
            index.setdefault(lang.flores_code.lower(), lang)
    for lang in languages:
        if lang.flores_code and "-" not in lang.code:
            index.setdefault(lang.flores_code.split("_")[0], lang)
    for lang in languages:
        if lang.whisper_code:
            index.setdefault(lang.whisper_code, lang)
    for lang in languages:
        index.setdefault(lang.name.lower(), lang)
    for alias, code in _ALIASES.items():
        index.setdefault(alias, by_code[code])
    for lang in languages:
        if "-" not in lang.code:
            index.setdefault(re.sub(r"\s*\(.*\)$", "", lang.name).lower(), lang)
    return index


def resolve(code_or_name: str) -> Language:
    """The language named by a short code, FLORES-200 code, Whisper code or English name (any case).

    Regional tags fall back to the language ("en-US" → English, "zh-Hant-TW" → Traditional Chinese);
    "zh-CN"/"zh-Hans" give Simplified and "zh-TW"/"zh-HK" Traditional Chinese.
    Raises LanguageError, with close matches, when nothing fits.
    """
    index = _index()
    key = " ".join(str(code_or_name).split()).lower()
    candidates = [key, key.replace("_", "-")]
    subtags = candidates[1].split("-")
    candidates += ["-".join(subtags[:n]) for n in range(len(subtags) - 1, 0, -1)]
    for candidate in candidates:
        if candidate in index:
            return index[candidate]
    raise LanguageError(_unknown_message(code_or_name, index))


def _unknown_message(code_or_name: str, index: dict[str, Language]) -> str:
    message = f"unknown language {code_or_name!r}; use a code such as {_EXAMPLE_CODES} (see `streamst languages`)"
    key = str(code_or_name).strip().lower()
    suggestions: list[str] = []
    for match in difflib.get_close_matches(key, index.keys(), n=6, cutoff=0.8):
        lang = index[match]
        label = f"{lang.name} ({lang.code})"
        if label not in suggestions:
            suggestions.append(label)
    if suggestions:
        message += f"; did you mean {', '.join(suggestions[:3])}?"
    return message
