"""The language table: FLORES-200 coverage, Whisper coverage, resolution, units."""

from __future__ import annotations

import dataclasses

import pytest

from streamst.errors import LanguageError
from streamst.languages import (
    N_FLORES_LANGUAGES,
    WHISPER_LANGUAGE_CODES,
    Language,
    all_languages,
    resolve,
)

FLORES_200_CODES = """
ace_Arab ace_Latn acm_Arab acq_Arab aeb_Arab afr_Latn ajp_Arab aka_Latn als_Latn amh_Ethi apc_Arab arb_Arab
arb_Latn ars_Arab ary_Arab arz_Arab asm_Beng ast_Latn awa_Deva ayr_Latn azb_Arab azj_Latn bak_Cyrl bam_Latn
ban_Latn bel_Cyrl bem_Latn ben_Beng bho_Deva bjn_Arab bjn_Latn bod_Tibt bos_Latn bug_Latn bul_Cyrl cat_Latn
ceb_Latn ces_Latn cjk_Latn ckb_Arab crh_Latn cym_Latn dan_Latn deu_Latn dik_Latn dyu_Latn dzo_Tibt ell_Grek
eng_Latn epo_Latn est_Latn eus_Latn ewe_Latn fao_Latn fij_Latn fin_Latn fon_Latn fra_Latn fur_Latn fuv_Latn
gaz_Latn gla_Latn gle_Latn glg_Latn grn_Latn guj_Gujr hat_Latn hau_Latn heb_Hebr hin_Deva hne_Deva hrv_Latn
hun_Latn hye_Armn ibo_Latn ilo_Latn ind_Latn isl_Latn ita_Latn jav_Latn jpn_Jpan kab_Latn kac_Latn kam_Latn
kan_Knda kas_Arab kas_Deva kat_Geor kaz_Cyrl kbp_Latn kea_Latn khk_Cyrl khm_Khmr kik_Latn kin_Latn kir_Cyrl
kmb_Latn kmr_Latn knc_Arab knc_Latn kon_Latn kor_Hang lao_Laoo lij_Latn lim_Latn lin_Latn lit_Latn lmo_Latn
ltg_Latn ltz_Latn lua_Latn lug_Latn luo_Latn lus_Latn lvs_Latn mag_Deva mai_Deva mal_Mlym mar_Deva min_Arab
min_Latn mkd_Cyrl mlt_Latn mni_Beng mos_Latn mri_Latn mya_Mymr nld_Latn nno_Latn nob_Latn npi_Deva nso_Latn
nus_Latn nya_Latn oci_Latn ory_Orya pag_Latn pan_Guru pap_Latn pbt_Arab pes_Arab plt_Latn pol_Latn por_Latn
prs_Arab quy_Latn ron_Latn run_Latn rus_Cyrl sag_Latn san_Deva sat_Olck scn_Latn shn_Mymr sin_Sinh slk_Latn
slv_Latn smo_Latn sna_Latn snd_Arab som_Latn sot_Latn spa_Latn srd_Latn srp_Cyrl ssw_Latn sun_Latn swe_Latn
swh_Latn szl_Latn tam_Taml taq_Latn taq_Tfng tat_Cyrl tel_Telu tgk_Cyrl tgl_Latn tha_Thai tir_Ethi tpi_Latn
tsn_Latn tso_Latn tuk_Latn tum_Latn tur_Latn twi_Latn tzm_Tfng uig_Arab ukr_Cyrl umb_Latn urd_Arab uzn_Latn
vec_Latn vie_Latn war_Latn wol_Latn xho_Latn ydd_Hebr yor_Latn yue_Hant zho_Hans zho_Hant zsm_Latn zul_Latn
""".split()

FLEURS_MINI_REFERENCE_KEYS = {
    "en": "eng_Latn", "zh": "zho_Hans", "zh-Hant": "zho_Hant", "yue": "yue_Hant", "ja": "jpn_Jpan",
    "ko": "kor_Hang", "es": "spa_Latn", "fr": "fra_Latn", "de": "deu_Latn", "pt": "por_Latn",
}  # fmt: skip


def test_table_covers_exactly_the_flores_200_codes() -> None:
    flores_codes = [lang.flores_code for lang in all_languages() if lang.flores_code is not None]
    assert len(FLORES_200_CODES) == N_FLORES_LANGUAGES
    assert len(flores_codes) == N_FLORES_LANGUAGES
    assert sorted(flores_codes) == sorted(FLORES_200_CODES)


def test_codes_and_names_are_unique() -> None:
    languages = all_languages()
    assert len({lang.code.lower() for lang in languages}) == len(languages)
    assert len({lang.name.lower() for lang in languages}) == len(languages)


def test_every_language_resolves_to_itself_by_each_of_its_keys() -> None:
    for lang in all_languages():
        assert resolve(lang.code) is lang
        assert resolve(lang.name) is lang
        assert resolve(lang.name.upper()) is lang
        if lang.flores_code:
            assert resolve(lang.flores_code) is lang


def test_language_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolve("en").name = "Englisch"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("en", "en"), ("EN", "en"), ("eng_Latn", "en"), ("ENG_LATN", "en"), ("english", "en"), ("English", "en"),
        ("en-US", "en"), ("en_GB", "en"), ("eng", "en"), (" de ", "de"), ("German", "de"), ("deu_Latn", "de"),
        ("zh", "zh"), ("zh-CN", "zh"), ("zh-Hans", "zh"), ("zh_CN", "zh"), ("zho_Hans", "zh"), ("Chinese", "zh"),
        ("Mandarin", "zh"), ("Simplified Chinese", "zh"), ("zh-TW", "zh-Hant"), ("zh-HK", "zh-Hant"),
        ("zh-Hant", "zh-Hant"), ("zh-hant-tw", "zh-Hant"), ("zho_Hant", "zh-Hant"),
        ("Traditional Chinese", "zh-Hant"), ("yue", "yue"), ("yue_Hant", "yue"), ("Cantonese", "yue"),
        ("ja", "ja"), ("Japanese", "ja"), ("jpn_Jpan", "ja"), ("ko", "ko"), ("pt-BR", "pt"), ("es-419", "es"),
        ("jw", "jv"), ("no", "nb"), ("Norwegian", "nb"), ("farsi", "fa"), ("pes_Arab", "fa"),
        ("Modern Standard Arabic", "ar"), ("arb_Latn", "ar-Latn"), ("Acehnese", "ace"), ("ace_Arab", "ace-Arab"),
        ("Kashmiri", "ks"), ("kas_Deva", "ks-Deva"), ("burmese", "my"), ("myanmar", "my"), ("Breton", "br"),
    ],
)  # fmt: skip
def test_resolve_accepts_codes_names_and_aliases(query: str, code: str) -> None:
    assert resolve(query).code == code


def test_fleurs_mini_reference_keys_resolve_to_their_flores_files() -> None:
    for key, flores_code in FLEURS_MINI_REFERENCE_KEYS.items():
        assert resolve(key).flores_code == flores_code
        assert resolve(key).code == key


def test_prompt_names_of_the_main_languages() -> None:
    assert resolve("en").name == "English"
    assert resolve("zh").name == "Simplified Chinese"
    assert resolve("zh-Hant").name == "Traditional Chinese"
    assert resolve("yue").name == "Cantonese"
    assert resolve("de").name == "German"


def test_unknown_language_names_the_input_and_valid_examples() -> None:
    with pytest.raises(LanguageError) as excinfo:
        resolve("xx")
    message = str(excinfo.value)
    assert "unknown language 'xx'" in message
    assert "en, zh, de, fr, es, ja" in message
    assert "streamst languages" in message


def test_unknown_language_suggests_close_matches() -> None:
    with pytest.raises(LanguageError, match=r"did you mean German \(de\)"):
        resolve("Germn")
    with pytest.raises(LanguageError, match=r"Simplified Chinese \(zh\)"):
        resolve("chinse")


@pytest.mark.parametrize("query", ["", "   ", "klingon", "zz-ZZ"])
def test_unresolvable_inputs_raise_language_error(query: str) -> None:
    with pytest.raises(LanguageError):
        resolve(query)


def test_every_whisper_language_is_reachable_by_its_whisper_code() -> None:
    assert len(WHISPER_LANGUAGE_CODES) == len(set(WHISPER_LANGUAGE_CODES)) == 100
    for whisper_code in WHISPER_LANGUAGE_CODES:
        assert resolve(whisper_code).whisper_code == whisper_code


def test_whisper_codes_match_faster_whisper() -> None:
    tokenizer = pytest.importorskip("faster_whisper.tokenizer")
    assert set(WHISPER_LANGUAGE_CODES) == set(tokenizer._LANGUAGE_CODES)


def test_whisper_codes_in_table_are_whisper_languages() -> None:
    whisper_codes = set(WHISPER_LANGUAGE_CODES)
    for lang in all_languages():
        assert lang.whisper_code is None or lang.whisper_code in whisper_codes


def test_only_whisper_languages_lack_a_flores_code() -> None:
    extra = [lang for lang in all_languages() if lang.flores_code is None]
    assert {lang.code for lang in extra} == {"br", "haw", "la"}
    assert all(lang.whisper_code is not None for lang in extra)


@pytest.mark.parametrize("code", ["zh", "zh-Hant", "yue", "ja", "ko", "th"])
def test_char_latency_unit_for_languages_written_without_spaces(code: str) -> None:
    assert resolve(code).latency_unit == "char"


@pytest.mark.parametrize("code", ["en", "de", "fr", "es", "pt", "ru", "ar", "vi"])
def test_word_latency_unit_for_space_separated_languages(code: str) -> None:
    assert resolve(code).latency_unit == "word"


@pytest.mark.parametrize(
    ("code", "tokenizer"),
    [("zh", "zh"), ("zh-Hant", "zh"), ("yue", "zh"), ("ja", "ja-mecab"), ("ko", "ko-mecab"), ("en", "13a"),
     ("de", "13a"), ("th", "char")],
)  # fmt: skip
def test_bleu_tokenizers(code: str, tokenizer: str) -> None:
    assert resolve(code).bleu_tokenizer == tokenizer


def test_no_language_uses_the_flores200_tokenizer() -> None:
    allowed = {"zh", "ja-mecab", "ko-mecab", "char", "13a"}
    assert {lang.bleu_tokenizer for lang in all_languages()} <= allowed


def test_all_languages_returns_language_records() -> None:
    languages = all_languages()
    assert isinstance(languages, tuple)
    assert all(isinstance(lang, Language) for lang in languages)
    assert languages[0].flores_code == "ace_Arab"
